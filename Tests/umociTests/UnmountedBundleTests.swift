import CLinux
import Foundation
import Basics
import OCI
import BundleFormat
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// After a reboot a mounted bundle's rootfs/ is an empty directory and its server is gone
/// (runc then fails with `exec: "sh": executable file not found`): the commands say how to
/// bring it back, `umoci mount BUNDLE`, in one line: an error where they cannot go on, a
/// warning where they can (repack: upper/ holds every change).
@Suite(.enabled(if: fuseAvailable && geteuid() == 0, "mounting needs root and /dev/fuse"), .serialized)
struct UnmountedBundleTests {
    /// Unpacks `basic` from a copy of the fixtures and changes a file through the mount.
    func mountedBundle(_ dir: TemporaryDirectory) throws -> (layout: String, bundle: MountedBundle) {
        let L = try copyOfFixtures(to: dir("L"))
        let bundle = MountedBundle(dir("bundle"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", bundle.paths.bundle))
        try write(bundle.paths.rootfs + "/kept", "before the reboot\n")
        return (L, bundle)
    }

    /// The server killed (it removes nothing of its own), the mount detached: what a reboot
    /// leaves.
    func reboot(_ paths: BundlePaths, detach: Bool = true) throws {
        let servers = serverProcesses(of: paths.bundle)
        try #require(!servers.isEmpty)
        for pid in servers { kill(pid, SIGKILL) }
        try #require(serversExit(paths.bundle))
        if detach {
            try #require(umount2(paths.rootfs, Int32(MNT_DETACH)) == 0)
            try #require(try FileManager.default.contentsOfDirectory(atPath: paths.rootfs).isEmpty)
        }
    }

    /// One warning line naming `umoci mount BUNDLE`, and nothing else.
    func warnsToMount(_ output: Output, _ paths: BundlePaths, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(output.status == 0, "\(output)", sourceLocation: sourceLocation)
        let lines = output.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].hasPrefix("   • ") && lines[0].contains("umoci mount \(paths.bundle)"),
                "\(output)", sourceLocation: sourceLocation)
    }

    @Test func afterARebootCommandsNameUmociMount() throws {
        let dir = TemporaryDirectory()
        let (L, b) = try mountedBundle(dir)
        defer { withExtendedLifetime(b) {} }
        try reboot(b.paths)
        let advice = "umoci mount \(b.paths.bundle)"

        fails(try umoci("umount", b.paths.bundle), containing: advice)
        let before = snapshot(b.paths.bundle)
        fails(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", b.paths.bundle), containing: advice)
        #expect(snapshot(b.paths.bundle) == before)

        warnsToMount(try umoci("repack", "--image", L + ":after", b.paths.bundle), b.paths)
        #expect(try lastLayerEntries(L, "after").contains("kept"))

        ok(try umoci("mount", b.paths.bundle))
        #expect(readText(b.paths.rootfs + "/kept") == "before the reboot\n")
        #expect(readText(b.paths.rootfs + "/etc/hostname") == "test\n")
    }

    /// --refresh-bundle on an unmounted bundle: the new image becomes the base and upper/ is
    /// emptied (its content is in the new image); `mount` serves the new base.
    @Test func refreshAfterARebootWarnsAndMountServesTheNewBase() throws {
        let dir = TemporaryDirectory()
        let (L, b) = try mountedBundle(dir)
        defer { withExtendedLifetime(b) {} }
        try reboot(b.paths)
        warnsToMount(try umoci("repack", "--refresh-bundle", "--image", L + ":refreshed", b.paths.bundle), b.paths)
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.paths.upper).isEmpty)
        ok(try umoci("mount", b.paths.bundle))
        #expect(readText(b.paths.rootfs + "/kept") == "before the reboot\n")
        ok(try umoci("repack", "--image", L + ":unchanged", b.paths.bundle))
        let refreshed = try ImageLayout(opening: L).loadImage(tag: "refreshed")
        #expect(try ImageLayout(opening: L).loadImage(tag: "unchanged").manifest.layers == refreshed.manifest.layers)
    }

    /// A server killed under its mount (the mount left, "Transport endpoint is not connected"):
    /// repack warns the same way; umount cleans the dead mount up.
    @Test func deadServerWarnsAndUmountCleansUp() throws {
        let dir = TemporaryDirectory()
        let (L, b) = try mountedBundle(dir)
        defer { withExtendedLifetime(b) {} }
        try reboot(b.paths, detach: false)
        #expect(mountedBelow(b.paths.rootfs))
        warnsToMount(try umoci("repack", "--image", L + ":after", b.paths.bundle), b.paths)
        ok(try umoci("umount", b.paths.bundle))
        #expect(!mountedBelow(b.paths.rootfs))
    }
}
