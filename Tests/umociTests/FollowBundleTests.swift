import CLinux
import Foundation
import OCI
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// A mounted bundle behaves like a directory its owner can throw away: every way of deleting it
/// succeeds, in whatever order its directory lists the entries, and leaves no mount and no
/// server; `umount` needs nothing but the mount.
@Suite(.enabled(if: fuseAvailable, "FUSE is not available here (/dev/fuse)"), .serialized)
struct FollowBundleTests {
    /// Unpacks fixture image `basic` to `path`; the bundle is unmounted at the end of the test
    /// whatever happened.
    func unpack(_ path: String, cache: String, image: String = fixtureLayout + ":basic") throws -> MountedBundle {
        let bundle = MountedBundle(path)
        ok(try umoci("unpack", "--cache-dir", cache, "--image", image, path))
        #expect(mountedBelow(path))
        #expect(serverProcesses(of: path).count == 1)
        return bundle
    }

    /// Deletes `path` with one of the deleting programs; its output.
    func delete(_ path: String, with tool: String) throws -> Output {
        switch tool {
        case "rm": return try run("/bin/rm", ["-rf", path])
        case "rmtree": return try run("/usr/bin/env", ["python3", "-c", "import shutil, sys; shutil.rmtree(sys.argv[1])", path])
        default: return try run("/usr/bin/find", [path, "-delete"])
        }
    }

    func expectGone(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!FileManager.default.fileExists(atPath: path), sourceLocation: sourceLocation)
        #expect(!mountedBelow(path), "a mount is left under \(path)", sourceLocation: sourceLocation)
        #expect(serversExit(path), "the server of \(path) is still running: \(serverStates(path))", sourceLocation: sourceLocation)
    }

    /// What the servers of `bundle` are waiting for, for a failure message.
    func serverStates(_ bundle: String) -> String {
        serverProcesses(of: bundle).map { pid in
            let fm = FileManager.default
            let threads = (try? fm.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            let waits = threads.map { (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/wchan", encoding: .utf8)) ?? "?" }
            let fds = ((try? fm.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).map {
                (try? fm.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "?"
            }
            let log = (try? String(contentsOfFile: bundle + "/umoci-mount.log", encoding: .utf8)) ?? ""
            return "pid \(pid) waits \(waits) fds \(fds) mounts \(mountedBelow(bundle)) log \(log)"
        }.joined(separator: "; ")
    }

    /// ext4 and tmpfs list a directory's entries in different orders (hash order, newest
    /// first), so rootfs/ is reached before or after umoci.json and upper/ are gone.
    @Test(arguments: ["rm", "rmtree", "find"], ["disk", "tmpfs"])
    func deletingAMountedBundle(_ tool: String, _ fileSystem: String) throws {
        let dir = TemporaryDirectory()
        func check(_ parent: String) throws {
            let path = parent + "/bundle"
            let bundle = try unpack(path, cache: dir("cache"))
            defer { withExtendedLifetime(bundle) {} }
            let order = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            let output = try delete(path, with: tool)
            #expect(output.status == 0 && output.stderr.isEmpty, "listing order \(order): \(output)")
            expectGone(path)
        }
        if fileSystem == "tmpfs" { try withTmpfs(dir, check) } else { try check(dir.path) }
    }

    /// Each of the three ways the server notices, forced by deleting one entry first: upper/
    /// (inotify, and the root opendir finds it gone), umoci.json (the root opendir), rootfs/
    /// (the request that empties the root). Then rm -rf of the rest.
    @Test(arguments: ["upper", "umoci.json", "rootfs"])
    func deletingInEveryOrder(_ first: String) throws {
        let dir = TemporaryDirectory()
        let path = dir("bundle")
        let bundle = try unpack(path, cache: dir("cache"))
        defer { withExtendedLifetime(bundle) {} }
        try "changed\n".write(toFile: path + "/rootfs/etc/hostname", atomically: false, encoding: .utf8)
        ok(try run("/bin/rm", ["-rf", path + "/" + first]))
        ok(try run("/bin/rm", ["-rf", path]))
        expectGone(path)
    }

    /// An image with an empty root (umoci new) gives the deleter nothing to remove through the
    /// mount: the root's opendir by a process that holds the bundle directory open (as rm,
    /// find and rmtree do) detaches it; listing it otherwise does not.
    @Test func deletingABundleWhoseRootIsEmpty() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":empty"))
        let path = dir("bundle")
        let bundle = try unpack(path, cache: dir("cache"), image: L + ":empty")
        defer { withExtendedLifetime(bundle) {} }
        #expect(ok(try run("/bin/ls", ["-A", path + "/rootfs"])) == "")
        #expect(mountedBelow(path))
        // rootfs/ first, the way rmtree goes through a directory, then the rest.
        let script = """
            import os, shutil, sys
            b = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
            r = os.open("rootfs", os.O_RDONLY | os.O_DIRECTORY, dir_fd=b)
            assert list(os.scandir(r)) == []
            os.close(r)
            os.rmdir("rootfs", dir_fd=b)
            os.close(b)
            shutil.rmtree(sys.argv[1])
            """
        ok(try run("/usr/bin/env", ["python3", "-c", script, path]))
        expectGone(path)
    }

    /// rm -rf of rootfs/ alone deletes the image's entries through the mount; the request that
    /// empties the root detaches the mount, so the rmdir of rootfs/ succeeds, and nothing is
    /// written into the bundle after that.
    @Test func deletingTheRootfsDetaches() throws {
        let dir = TemporaryDirectory()
        let path = dir("bundle")
        let bundle = try unpack(path, cache: dir("cache"))
        defer { withExtendedLifetime(bundle) {} }
        ok(try run("/bin/rm", ["-rf", path + "/rootfs"]))
        #expect(!FileManager.default.fileExists(atPath: path + "/rootfs"))
        #expect(!mountedBelow(path))
        #expect(serversExit(path))
        #expect(FileManager.default.fileExists(atPath: path + "/umoci.json"))
        // What was deleted through the mount is in upper/: mounted again, the root is empty.
        ok(try umoci("mount", path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/rootfs") == [])
        ok(try umoci("umount", path))
        ok(try run("/bin/rm", ["-rf", path]))
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    /// Emptying the root through the mount detaches it; repack then refuses to miss what was
    /// put into the plain directory, and after `umoci mount` the same file is in the layer.
    @Test func repackRefusesFilesInADetachedRootfs() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let path = dir("bundle")
        let bundle = try unpack(path, cache: dir("cache"), image: L + ":basic")
        defer { withExtendedLifetime(bundle) {} }
        ok(try run("/usr/bin/find", [path + "/rootfs", "-mindepth", "1", "-maxdepth", "1", "-exec", "rm", "-rf", "{}", "+"]))
        #expect(!mountedBelow(path))
        func put() {
            let fd = open(path + "/rootfs/new-file", O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o644)
            #expect(fd >= 0)
            _ = "new\n".withCString { write(fd, $0, 4) }
            close(fd)
        }
        put()
        fails(try umoci("repack", "--image", L + ":next", path), containing: "umoci mount \(path)")
        ok(try run("/bin/rm", [path + "/rootfs/new-file"]))
        ok(try umoci("mount", path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/rootfs") == [])
        put()
        ok(try umoci("repack", "--image", L + ":next", path))
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":next", dir("next")]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir("next")) == ["new-file"])
    }

    /// A file open under the mount keeps reading after the bundle is deleted; the server exits
    /// once it is closed.
    @Test func openFilesOutliveTheDeletion() throws {
        let dir = TemporaryDirectory()
        let path = dir("bundle")
        let bundle = try unpack(path, cache: dir("cache"))
        defer { withExtendedLifetime(bundle) {} }
        let fd = open(path + "/rootfs/etc/hostname", O_RDONLY | O_NOFOLLOW)
        try #require(fd >= 0)
        var closed = false
        defer { if !closed { close(fd) } }
        ok(try run("/bin/rm", ["-rf", path]))
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(!mountedBelow(path))
        #expect(serverProcesses(of: path).count == 1, "the server must serve the open file")
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = pread(fd, &buffer, buffer.count, 0)
        #expect(n == 5 && String(decoding: buffer[0..<max(n, 0)], as: UTF8.self) == "test\n")
        close(fd)
        closed = true
        #expect(serversExit(path))
    }

    /// After the mount detached itself, its server lives on while files under it are open;
    /// mount refuses to start a second server on the same upper directory until it is gone.
    @Test func mountWaitsForTheDetachedServer() throws {
        let dir = TemporaryDirectory()
        let path = dir("bundle")
        let bundle = try unpack(path, cache: dir("cache"))
        defer { withExtendedLifetime(bundle) {} }
        let fd = open(path + "/rootfs/etc/hostname", O_RDONLY | O_NOFOLLOW)
        try #require(fd >= 0)
        var closed = false
        defer { if !closed { close(fd) } }
        ok(try run("/usr/bin/find", [path + "/rootfs", "-mindepth", "1", "-maxdepth", "1", "-exec", "rm", "-rf", "{}", "+"]))
        #expect(!mountedBelow(path))
        let old = serverProcesses(of: path)
        #expect(old.count == 1)
        fails(try umoci("mount", path), containing: "(pid \(old.first ?? 0)) still serves files open under its detached mount")
        #expect(!mountedBelow(path))
        close(fd)
        closed = true
        #expect(serversExit(path))
        ok(try umoci("mount", path))
        #expect(try FileManager.default.contentsOfDirectory(atPath: path + "/rootfs") == [])
    }

    /// LXC runs its templates in a private mount namespace: deleting the bundle inside it, or
    /// from outside it (where rootfs/ is a plain directory), ends the mount and the server.
    @Test(arguments: ["inside", "outside"])
    func privateMountNamespace(_ where_: String) throws {
        let dir = TemporaryDirectory()
        let path = dir("bundle")
        let bundle = MountedBundle(path)
        defer { withExtendedLifetime(bundle) {} }
        let unpack = "'\(ourUmoci)' unpack --cache-dir '\(dir("cache"))' --image '\(fixtureLayout):basic' '\(path)'"
        let script = where_ == "inside" ? unpack + " && rm -rf '\(path)'" : unpack
        ok(try run("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", script]))
        if where_ == "outside" {
            #expect(serverProcesses(of: path).count == 1)
            #expect(!mountedBelow(path))
            ok(try run("/bin/rm", ["-rf", path]))
        }
        expectGone(path)
    }

    /// umount finds the mount through mountinfo and the server by its command line.
    @Test(arguments: ["umoci.json", "umoci-mount.pid", "upper"])
    func umountWithoutBundleFiles(_ missing: String) throws {
        let dir = TemporaryDirectory()
        let path = dir("bundle")
        let bundle = try unpack(path, cache: dir("cache"))
        defer { withExtendedLifetime(bundle) {} }
        ok(try run("/bin/rm", ["-rf", path + "/" + missing]))
        ok(try umoci("umount", path))
        #expect(!mountedBelow(path))
        #expect(serversExit(path))
        #expect(FileManager.default.fileExists(atPath: path + "/rootfs"))
    }

    /// The index cache keeps hard links to the blobs of mounted images: after the layout is
    /// deleted, or its image garbage-collected, the mount keeps working and the bundle can be
    /// mounted again, with the same tree.
    @Test(arguments: ["deleted", "gc"])
    func remountWithoutTheLayout(_ how: String) throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let bundle = try unpack(dir("bundle"), cache: dir("cache"), image: L + ":big")
        defer { withExtendedLifetime(bundle) {} }
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":big-gzip", dir("theirs")]))
        if how == "deleted" {
            ok(try run("/bin/rm", ["-rf", L]))
        } else {
            for tag in try ImageLayout(opening: L).readIndex().json["manifests"]?.array ?? [] {
                if let name = tag.object?["annotations"]?.object?["org.opencontainers.image.ref.name"]?.string {
                    ok(try umoci("rm", "--image", L + ":" + name))
                }
            }
            ok(try umoci("gc", "--layout", L))
            #expect(try FileManager.default.contentsOfDirectory(atPath: L + "/blobs/sha256").isEmpty)
        }
        try expectSameTree(bundle.paths.rootfs, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        ok(try umoci("umount", bundle.paths.bundle))
        ok(try umoci("mount", bundle.paths.bundle))
        try expectSameTree(bundle.paths.rootfs, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
    }

    /// Where the cache cannot link the layout's blobs (another file system), mounting again
    /// without the layout fails with one line naming the missing layer.
    @Test func remountWithoutTheLayoutOnAnotherFileSystem() throws {
        let dir = TemporaryDirectory()
        try withTmpfs(dir) { tmpfs in
            let L = tmpfs + "/L"
            ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
            let layer = try ImageLayout(opening: L).loadImage(tag: "basic").manifest.layers[0].digest
            let bundle = try unpack(dir("bundle"), cache: dir("cache"), image: L + ":basic")
            defer { withExtendedLifetime(bundle) {} }
            ok(try run("/bin/rm", ["-rf", L]))
            ok(try umoci("umount", bundle.paths.bundle))
            fails(try umoci("mount", bundle.paths.bundle), containing: "blob \(layer) is missing")
            #expect(!mountedBelow(bundle.paths.bundle))
        }
    }

    @Test func umountRefusesAForeignMount() throws {
        let dir = TemporaryDirectory()
        let path = dir("bundle")
        try FileManager.default.createDirectory(atPath: path + "/rootfs", withIntermediateDirectories: true)
        try #require(mount("tmpfs", path + "/rootfs", "tmpfs", 0, nil) == 0)
        defer { umount2(path + "/rootfs", Int32(MNT_DETACH)) }
        fails(try umoci("umount", path), containing: "is not mounted by umoci (it is a tmpfs mount)")
        #expect(mountedBelow(path))
    }
}
