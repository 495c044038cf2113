import Foundation
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

let lxcCreate = "/usr/bin/lxc-create"
let lxcAvailable = FileManager.default.isExecutableFile(atPath: lxcCreate) && geteuid() == 0

/// LXC's OCI template (Debian's `lxc`, /usr/share/lxc/templates/lxc-oci) unpacks with `umoci`
/// from PATH, moves the top-level entries of the bundle's rootfs out with mv, and deletes the
/// bundle with rm -Rf under `set -eu`: with this tool first on PATH it must work unmodified and
/// leave no mount and no server behind, giving the rootfs Debian's umoci gives.
@Suite(.enabled(if: fuseAvailable, "FUSE is not available here (/dev/fuse)"),
       .enabled(if: lxcAvailable, "lxc-create is not installed (Debian package lxc, see scripts/setup.sh) or not root"),
       .serialized)
struct LXCTests {
    /// lxc-create of `tag` into `lxcPath`/c with `bin` first on PATH (nil: the system's
    /// umoci). No network: the container gets `lxc.net.0.type = empty`.
    func create(_ dir: TemporaryDirectory, _ lxcPath: String, _ tag: String, bin: String?, config extra: String = "") throws -> Output {
        let config = dir("lxc.conf")
        try ("lxc.net.0.type = empty\n" + extra).write(toFile: config, atomically: true, encoding: .utf8)
        var environment = ["UMOCI_CACHE_DIR": dir("cache")]
        if let bin { environment["PATH"] = bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin") }
        return try run(lxcCreate, ["-P", dir(lxcPath), "-n", "c", "-f", config, "-t", "oci", "--",
                                   "--url", "oci:" + fixtureLayout + ":" + tag], environment: environment)
    }

    @Test func lxcCreateWithThisUmoci() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir("bin"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir("bin/umoci"), withDestinationPath: ourUmoci)
        let bundle = dir("ours/c/rootfs.tmp")
        // Whatever happens, no mount of ours is left for the next test.
        defer {
            if mountedBelow(bundle + "/rootfs") { umount2(bundle + "/rootfs", Int32(MNT_DETACH)) }
        }
        let ours = try create(dir, "ours", "busybox", bin: dir("bin"))
        #expect(ours.status == 0, "\(ours)")
        #expect(ok(try run("/bin/sh", ["-c", "PATH='\(dir("bin"))':$PATH command -v umoci"])) == dir("bin/umoci") + "\n")
        #expect(FileManager.default.fileExists(atPath: dir("ours/c/rootfs/bin/busybox")))
        #expect(!FileManager.default.fileExists(atPath: bundle), "the template's bundle is left")
        #expect(!mountedBelow(dir.path), "a mount is left")
        #expect(serversExit(bundle), "the mount server is still running")

        let theirs = try create(dir, "theirs", "busybox", bin: nil)
        #expect(theirs.status == 0, "\(theirs)")
        // LXC writes these two files when it creates the container.
        for tree in ["ours", "theirs"] {
            ok(try run("/usr/bin/touch", ["-h", "-d", "@0", dir(tree + "/c/rootfs/etc/hostname"), dir(tree + "/c/rootfs/etc/hosts")]))
        }
        try expectSameTree(dir("ours/c/rootfs"), dir("theirs/c/rootfs"), compareDirectoryMtime: { $0 != "" && $0 != "etc" })
    }

    /// An unprivileged container (lxc.idmap): LXC runs the template in a user namespace, where
    /// it calls `umoci --log=error unpack --rootless`. With this tool first on PATH the rootfs
    /// is Debian umoci's, owners included (every file the namespace's root, 100000, as umoci's
    /// rootless extraction gives them).
    @Test func lxcCreateUnprivilegedWithThisUmoci() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir("bin"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir("bin/umoci"), withDestinationPath: ourUmoci)
        let idmap = "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n"
        defer { _ = try? run("/bin/rm", ["-rf", dir.path]) }  // files of the namespace's root
        let ours = try create(dir, "ours", "busybox", bin: dir("bin"), config: idmap)
        #expect(ours.status == 0, "\(ours)")
        #expect(!mountedBelow(dir.path), "a mount is left")
        let theirs = try create(dir, "theirs", "busybox", bin: nil, config: idmap)
        #expect(theirs.status == 0, "\(theirs)")
        var st = stat()
        #expect(lstat(dir("ours/c/rootfs/bin/busybox"), &st) == 0 && st.st_uid == 100000 && st.st_gid == 100000)
        for tree in ["ours", "theirs"] {
            ok(try run("/usr/bin/touch", ["-h", "-d", "@0", dir(tree + "/c/rootfs/etc/hostname"), dir(tree + "/c/rootfs/etc/hosts")]))
        }
        try expectSameTree(dir("ours/c/rootfs"), dir("theirs/c/rootfs"), compareDirectoryMtime: { $0 != "" && $0 != "etc" })
    }
}
