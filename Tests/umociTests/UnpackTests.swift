import CLinux
import Foundation
import Basics
import OCI
import LayerView
import UpperFormat
import BundleFormat
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// Every path under `root` (and "" for it) with its st_ino, not following symlinks.
func inodeNumbers(_ root: String) throws -> [String: UInt64] {
    var out: [String: UInt64] = [:]
    for rel in [""] + (try FileManager.default.subpathsOfDirectory(atPath: root)) {
        var st = stat()
        guard lstat(rel.isEmpty ? root : root + "/" + rel, &st) == 0 else { throw StoreError.system("lstat", rel) }
        out[rel] = UInt64(st.st_ino)
    }
    return out
}

/// The entry names of the last layer of `layout`:`tag` (a gzip layer), as GNU tar lists them.
func lastLayerEntries(_ layout: String, _ tag: String) throws -> Set<String> {
    let opened = try ImageLayout(opening: layout)
    let image = try opened.loadImage(tag: tag)
    let listing = ok(try run("/bin/tar", ["-tzf", opened.blobPath(image.manifest.layers.last!.digest)]))
    return Set(listing.split(separator: "\n").map(String.init))
}

/// Debian's umoci extracts `layout`:`tag` into `into`, and that is the tree at `root` (a layer
/// keeps whole-second mtimes; directory mtimes are not compared).
func expectDebianUmociExtracts(_ layout: String, _ tag: String, into: String, as root: String,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
    ok(try run(debianUmoci, ["raw", "unpack", "--image", layout + ":" + tag, into]), sourceLocation: sourceLocation)
    try expectSameTree(root, into, compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true, sourceLocation: sourceLocation)
}

/// `umoci unpack` mounts the image copy-on-write; runc runs on it; repack reads its changes.
@Suite(.enabled(if: fuseAvailable, "FUSE is not available here (/dev/fuse)"), .serialized)
struct UnpackTests {
    func unpack(_ dir: TemporaryDirectory, _ image: String, keepDirlinks: Bool = false) throws -> MountedBundle {
        let bundle = MountedBundle(dir("bundle-" + image.replacingOccurrences(of: "/", with: "_")))
        let flags = keepDirlinks ? ["--keep-dirlinks"] : []
        ok(try run(ourUmoci, ["unpack", "--cache-dir", dir("cache")] + flags + ["--image", image, bundle.paths.bundle]))
        return bundle
    }

    @Test func bundleLayout() throws {
        let dir = TemporaryDirectory()
        let b = try unpack(dir, fixtureLayout + ":basic")
        var st = stat()
        #expect(stat(b.paths.bundle, &st) == 0 && st.st_mode & 0o777 == 0o700)
        let metadata = try readJSON(b.paths.metadata)
        #expect(metadata["umoci_version"] == .string("2"))
        let walk = metadata["from_descriptor_path"]?.object?["descriptor_walk"]?.array
        #expect(walk?.first?.object?["annotations"]?.object?["org.opencontainers.image.ref.name"] == .string("basic"))
        #expect(metadata["map_options"]?.object?["rootless"] == .bool(false))
        let config = try readJSON(b.paths.config)
        #expect(config["root"]?.object?["path"] == .string("rootfs"))
        #expect(try String(contentsOfFile: b.paths.rootfs + "/etc/hostname", encoding: .utf8) == "test\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.paths.upper).isEmpty)
        // Like umoci, a second unpack into the same bundle is refused and changes nothing.
        let before = try FileManager.default.contentsOfDirectory(atPath: b.paths.bundle).sorted()
        fails(try umoci("unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":basic", b.paths.bundle), containing: b.paths.config)
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.paths.bundle).sorted() == before)
    }

    @Test func failureLeavesNothingBehind() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let layout = try ImageLayout(opening: L)
        let layer = try layout.loadImage(tag: "basic").manifest.layers[0]
        try FileManager.default.removeItem(atPath: layout.blobPath(layer.digest))
        fails(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", dir("bundle")), containing: "blob \(layer.digest)")
        #expect(!FileManager.default.fileExists(atPath: dir("bundle")))
        fails(try umoci("unpack", "--image", L + ":nope", dir("bundle")), containing: #""nope""#)
        #expect(!FileManager.default.fileExists(atPath: dir("bundle")))
        #expect(!((try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? "").contains(dir("bundle")))
    }

    /// For every test image, the mounted tree is what Debian's umoci extracts.
    @Test(arguments: ["basic", "whiteouts", "formats", "big", "many", "dirlinks", "names"])
    func mountedTreeEqualsDebianUmoci(_ name: String) throws {
        let dir = TemporaryDirectory()
        let b = try unpack(dir, fixtureLayout + ":" + name)
        ok(try run(debianUmoci, ["raw", "unpack", "--image", fixtureLayout + ":" + name + "-gzip", dir("theirs")]))
        let layout = try ImageLayout(opening: fixtureLayout)
        let view = try MergedView.open(layout: layout, image: layout.loadImage(tag: name), cache: IndexCache(directory: dir("cache")))
        try expectSameTree(b.paths.rootfs, dir("theirs"), compareDirectoryMtime: { path in
            guard !path.isEmpty, let node = view.lookup(path) else { return false }
            return !view.inode(of: node).implicit
        })
    }

    @Test func keepDirlinksMount() throws {
        let dir = TemporaryDirectory()
        let b = try unpack(dir, fixtureLayout + ":dirlinks", keepDirlinks: true)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: b.paths.rootfs + "/lib") == "usr/lib")
        #expect(FileManager.default.fileExists(atPath: b.paths.rootfs + "/usr/lib/added.so"))
        #expect(try readJSON(b.paths.metadata)["mount"]?.object?["keep_dirlinks"] == .bool(true))
    }

    /// runc runs a process as the image's non-root user on the mount, and its writes land in
    /// the upper directory.
    @Test func runcRunsOnTheMount() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("config", "--image", L + ":busybox", "--config.user", "user", "--config.cmd", "/bin/sh",
                     "--config.cmd", "-c", "--config.cmd", "id -u; id -G; echo from-container > /home/user/out; cat /etc/os-release"))
        let b = try unpack(dir, L + ":busybox")
        var config = try readJSON(b.paths.config)
        var process = config[object: "process"]
        process["terminal"] = .bool(false)
        config["process"] = .object(process)
        try Data(JSON.object(config).serialized()).write(to: URL(fileURLWithPath: b.paths.config))
        let id = "umoci-test-" + String(UUID().uuidString.prefix(8))
        let out = try run("/usr/sbin/runc", ["run", "-b", b.paths.bundle, id])
        _ = try? run("/usr/sbin/runc", ["delete", "-f", id])
        #expect(out.status == 0, "\(out)")
        #expect(out.stdout == "1000\n1000 50\nNAME=\"umoci test busybox\"\n")
        #expect(try String(contentsOfFile: b.paths.upper + "/home/user/out", encoding: .utf8) == "from-container\n")
        var st = stat()
        #expect(stat(b.paths.upper + "/home/user/out", &st) == 0 && st.st_uid == 1000)
        // A shell as root, too.
        process["user"] = .object(JSONObject(["uid": .int(0), "gid": .int(0)]))
        process["args"] = .strings(["/bin/sh", "-c", "touch /root/by-root && ls /root"])
        config["process"] = .object(process)
        try Data(JSON.object(config).serialized()).write(to: URL(fileURLWithPath: b.paths.config))
        let root = try run("/usr/sbin/runc", ["run", "-b", b.paths.bundle, id + "-root"])
        _ = try? run("/usr/sbin/runc", ["delete", "-f", id + "-root"])
        #expect(root.stdout == "by-root\n", "\(root)")
    }

    /// After kill -9 of the server, mount restores the rootfs with every fsynced write.
    @Test func mountAfterAServerCrash() throws {
        let dir = TemporaryDirectory()
        let b = try unpack(dir, fixtureLayout + ":basic")
        let file = b.paths.rootfs + "/etc/synced"
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        #expect(fd >= 0)
        _ = "durable\n".withCString { write(fd, $0, 8) }
        #expect(fsync(fd) == 0)
        close(fd)
        let pid = try #require(pid_t(try String(contentsOfFile: b.paths.pid, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(kill(pid, SIGKILL) == 0)
        usleep(300_000)
        fails(try umoci("mount", b.paths.bundle + "-nope"), containing: "umoci.json is missing")
        ok(try umoci("mount", b.paths.bundle))
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "durable\n")
        fails(try umoci("mount", b.paths.bundle), containing: b.paths.rootfs)
        ok(try umoci("umount", b.paths.bundle))
        fails(try umoci("umount", b.paths.bundle), containing: "umoci mount \(b.paths.bundle)")
        ok(try umoci("mount", b.paths.bundle))
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "durable\n")
    }

    /// unpack -> change through the mount -> repack: Debian's umoci unpacks the new image to
    /// the tree the mount showed, and a second unpack with this tool shows it too.
    @Test func unpackChangeRepack() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let b = try unpack(dir, L + ":whiteouts-gzip")
        let r = b.paths.rootfs
        let fm = FileManager.default
        try "new\n".write(toFile: r + "/new-file", atomically: false, encoding: .utf8)
        try "edited\n".write(toFile: r + "/a/y", atomically: false, encoding: .utf8)
        try fm.removeItem(atPath: r + "/dup")
        try fm.removeItem(atPath: r + "/a/sub")
        try fm.removeItem(atPath: r + "/d")
        try fm.createDirectory(atPath: r + "/d", withIntermediateDirectories: false)
        try "fresh\n".write(toFile: r + "/d/only-new", atomically: false, encoding: .utf8)
        try fm.removeItem(atPath: r + "/f")
        try fm.createDirectory(atPath: r + "/f", withIntermediateDirectories: false)
        try fm.removeItem(atPath: r + "/g")
        #expect(symlink("/a", r + "/g") == 0)
        #expect(chmod(r + "/multi/f003", 0o4750) == 0)
        #expect(chown(r + "/multi/f004", 1234, 5678) == 0)
        #expect(setxattr(r + "/multi/f005", "user.note", "v", 1, 0) == 0)
        #expect(rename(r + "/multi/f006", r + "/renamed") == 0)
        #expect(rename(r + "/h", r + "/h-renamed") == 0)
        #expect(link(r + "/new-file", r + "/new-link") == 0)
        ok(try umoci("repack", "--image", L + ":new", b.paths.bundle))
        try expectDebianUmociExtracts(L, "new", into: dir("theirs"), as: r)
        let again = try unpack(dir, L + ":new")
        try expectSameTree(again.paths.rootfs, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        ok(try run(skopeo, ["copy", "oci:\(L):new", "oci:\(dir("copy")):new"]))
    }

    /// A file written while repack reads it never ends up torn in the layer: repack starts the
    /// layer over, or fails saying so.
    @Test func writesRacingWithRepack() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let b = try unpack(dir, L + ":basic")
        let file = b.paths.rootfs + "/racy"
        // 128-byte lines never straddle a page: a write that does is not atomic for readers
        // (the file system grows the file page by page), so a point-in-time read could end
        // inside one, which is a consistent read all the same.
        let line = String(repeating: "x", count: 127) + "\n"
        let stopWriting = Mutex(false)
        let writer = Thread {
            let fd = open(file, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            defer { close(fd) }
            while !stopWriting.withLock({ $0 }) {
                _ = line.withCString { write(fd, $0, 128) }
            }
        }
        writer.start()
        defer { stopWriting.withLock { $0 = true } }
        usleep(200_000)
        for attempt in 0..<3 {
            let out = try umoci("repack", "--image", L + ":race\(attempt)", b.paths.bundle)
            if out.status != 0 {
                #expect(out.stderr.contains("kept changing"), "\(out)")
                continue
            }
            ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":race\(attempt)", dir("r\(attempt)")]))
            let data = try String(contentsOfFile: dir("r\(attempt)/racy"), encoding: .utf8)
            #expect(data.count % 128 == 0 && data.split(separator: "\n").allSatisfy { $0.count == 127 })
        }
        stopWriting.withLock { $0 = true }
        usleep(100_000)
    }

    /// repack --refresh-bundle of a mounted bundle: the server serves the new image, the upper
    /// directory empties but for a file open for writing, and the mount shows the same tree
    /// with the same inode numbers; open files keep working, and the next repack holds only
    /// the newer changes.
    @Test func refreshBundleWhileMounted() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let b = try unpack(dir, L + ":whiteouts-gzip")
        let r = b.paths.rootfs
        let fm = FileManager.default
        try "1\n".write(toFile: r + "/first", atomically: false, encoding: .utf8)
        try "edited\n".write(toFile: r + "/a/y", atomically: false, encoding: .utf8)
        try "next to y\n".write(toFile: r + "/a/new-in-a", atomically: false, encoding: .utf8)
        try fm.createDirectory(atPath: r + "/newdir/sub", withIntermediateDirectories: true)
        try "n\n".write(toFile: r + "/newdir/sub/f", atomically: false, encoding: .utf8)
        try fm.removeItem(atPath: r + "/d")
        try fm.createDirectory(atPath: r + "/d", withIntermediateDirectories: false)
        try "only\n".write(toFile: r + "/d/only", atomically: false, encoding: .utf8)
        try fm.removeItem(atPath: r + "/multi/f010")
        #expect(chmod(r + "/multi/f011", 0o600) == 0)
        #expect(link(r + "/first", r + "/first-link") == 0)
        // Open across the refresh: a writer, readers of an upper and a lower file, a directory.
        let writer = open(r + "/a/y", O_WRONLY | O_APPEND)
        let upperReader = open(r + "/first", O_RDONLY)
        let lowerReader = open(r + "/multi/f020", O_RDONLY)
        let directory = open(r + "/newdir/sub", O_RDONLY | O_DIRECTORY)
        var openFds = [writer, upperReader, lowerReader, directory].filter { $0 >= 0 }
        defer { openFds.forEach { close($0) } }
        #expect(writer >= 0 && upperReader >= 0 && lowerReader >= 0 && directory >= 0)
        // A socket a daemon listens on: sockets have no tar form, so it stays in upper/.
        ok(try run("/usr/bin/python3", ["-c", "import socket; socket.socket(socket.AF_UNIX).bind('app.sock')"], directory: r))
        ok(try run("/bin/cp", ["-a", r, dir("before")]))
        let inodesBefore = try inodeNumbers(r)

        ok(try umoci("repack", "--image", L + ":r1", "--refresh-bundle", b.paths.bundle))
        // Only the file open for writing (and its directory) and the socket stay.
        // Without the server's own files (the shared whiteout file, UpperWhiteout).
        func upperEntries() throws -> [String] {
            try fm.subpathsOfDirectory(atPath: b.paths.upper).filter { !$0.hasPrefix(".wh..wh..umoci-") }.sorted()
        }
        var upper = try upperEntries()
        #expect(upper == ["a", "a/y", "app.sock"])
        #expect(try UpperBaseline.read(b.paths.baseline)?.stamps.keys.sorted() == ["a", "a/y"])
        #expect(!fm.fileExists(atPath: b.paths.trash))
        try expectSameTree(r, dir("before"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        #expect(try inodeNumbers(r) == inodesBefore)
        // New files never take a number a path still reports (the upper inodes of files that
        // left are free for reuse).
        var fresh = Set<UInt64>()
        for i in 0..<40 {
            try "\(i)\n".write(toFile: r + "/newdir/sub/fresh\(i)", atomically: false, encoding: .utf8)
            var st = stat()
            #expect(lstat(r + "/newdir/sub/fresh\(i)", &st) == 0)
            fresh.insert(UInt64(st.st_ino))
        }
        #expect(fresh.count == 40 && fresh.isDisjoint(with: inodesBefore.values))
        try fm.removeItem(atPath: r + "/app.sock")
        // The open files.
        _ = "appended\n".withCString { write(writer, $0, 9) }
        #expect(try String(contentsOfFile: r + "/a/y", encoding: .utf8) == "edited\nappended\n")
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(pread(upperReader, &buffer, 64, 0) == 2 && buffer[0] == UInt8(ascii: "1"))
        #expect(pread(lowerReader, &buffer, 64, 0) == 64)
        let inside = openat(directory, "f", O_RDONLY)
        #expect(inside >= 0 && read(inside, &buffer, 64) == 2)
        close(inside)

        // Newer changes only, in the next layer.
        try "2\n".write(toFile: r + "/second", atomically: false, encoding: .utf8)
        try fm.removeItem(atPath: r + "/first")
        try fm.removeItem(atPath: r + "/newdir")
        try fm.removeItem(atPath: r + "/multi/f012")
        ok(try umoci("repack", "--image", L + ":r2", b.paths.bundle))
        let layout = try ImageLayout(opening: L)
        let r1 = try layout.loadImage(tag: "r1"), r2 = try layout.loadImage(tag: "r2")
        #expect(r2.manifest.layers.count == r1.manifest.layers.count + 1)
        // multi/ (and the root, ".") is in the layer when its mtime moved to another second
        // than r1 recorded (a layer keeps whole seconds; umoci's comparison is the same).
        #expect(try lastLayerEntries(L, "r2").subtracting(["multi/", "."]) == [".wh.first", ".wh.newdir", "a/y", "multi/.wh.f012", "second"])
        try expectDebianUmociExtracts(L, "r2", into: dir("theirs"), as: r)

        // A refresh on top of that, then the bundle mounted again: still the same tree.
        ok(try umoci("repack", "--image", L + ":r3", "--refresh-bundle", b.paths.bundle))
        upper = try upperEntries()
        #expect(upper == ["a", "a/y"])
        try expectSameTree(r, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        openFds.forEach { close($0) }
        openFds = []
        ok(try umoci("umount", b.paths.bundle))
        ok(try umoci("mount", b.paths.bundle))
        try expectSameTree(r, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        // Nothing changed since r3: no layer.
        ok(try umoci("repack", "--image", L + ":r4", b.paths.bundle))
        #expect(try layout.loadImage(tag: "r4").manifest.layers.count == layout.loadImage(tag: "r3").manifest.layers.count)
        // A directory made opaque around a file still as packed (a/y stayed): the next layer
        // hides the base's a/, so it must hold a/y again.
        #expect(rename(r + "/a", r + "/a2") == 0 && rename(r + "/a2", r + "/a") == 0)
        ok(try umoci("repack", "--image", L + ":r5", b.paths.bundle))
        #expect(try lastLayerEntries(L, "r5").contains("a/y"))
        try expectDebianUmociExtracts(L, "r5", into: dir("theirs5"), as: r)
    }

    /// When the server cannot rebase (here: its control socket is gone), refresh still makes
    /// the new image the base, and the recorded baseline keeps the bundle consistent: the
    /// next repack holds only newer changes, and a remount serves the same tree.
    @Test func refreshFallsBackToTheBaselineWithoutTheServer() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let b = try unpack(dir, L + ":whiteouts-gzip")
        let r = b.paths.rootfs
        try "1\n".write(toFile: r + "/first", atomically: false, encoding: .utf8)
        try "edited\n".write(toFile: r + "/a/y", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: r + "/newdir/sub", withIntermediateDirectories: true)
        try "n\n".write(toFile: r + "/newdir/sub/f", atomically: false, encoding: .utf8)
        #expect(unlink(b.paths.control) == 0)
        let refresh = try umoci("repack", "--image", L + ":r1", "--refresh-bundle", b.paths.bundle)
        ok(refresh)
        #expect(refresh.stderr.contains("keeps serving the previous image"), "\(refresh)")
        #expect(try FileManager.default.subpathsOfDirectory(atPath: b.paths.upper).contains("first"))
        #expect(try UpperBaseline.read(b.paths.baseline)?.stamps["first"] != nil)

        try "2\n".write(toFile: r + "/second", atomically: false, encoding: .utf8)
        try FileManager.default.removeItem(atPath: r + "/first")
        try FileManager.default.removeItem(atPath: r + "/newdir")
        try "edited again\n".write(toFile: r + "/a/y", atomically: false, encoding: .utf8)
        ok(try umoci("repack", "--image", L + ":r2", b.paths.bundle))
        let layout = try ImageLayout(opening: L)
        let r1 = try layout.loadImage(tag: "r1"), r2 = try layout.loadImage(tag: "r2")
        #expect(r2.manifest.layers.count == r1.manifest.layers.count + 1)
        #expect(try lastLayerEntries(L, "r2") == [".wh.first", ".wh.newdir", "a/y", "second"])
        try expectDebianUmociExtracts(L, "r2", into: dir("theirs"), as: r)
        // Served again on the new base, the same upper directory shows the same tree.
        ok(try umoci("umount", b.paths.bundle))
        ok(try umoci("mount", b.paths.bundle))
        try expectSameTree(r, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
    }

    /// A container running on the mount goes on across repack --refresh-bundle: its working
    /// directory leaves the upper directory, and it keeps appending to a file there.
    @Test func containerKeepsRunningAcrossRefresh() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let b = try unpack(dir, L + ":busybox")
        var config = try readJSON(b.paths.config)
        var process = config[object: "process"]
        process["terminal"] = .bool(false)
        process["user"] = .object(JSONObject(["uid": .int(0), "gid": .int(0)]))
        process["args"] = .strings(["/bin/sh", "-c", "cd /root && i=0; while true; do echo $i >> counter; i=$((i+1)); sleep 0.05; done"])
        config["process"] = .object(process)
        try Data(JSON.object(config).serialized()).write(to: URL(fileURLWithPath: b.paths.config))
        let id = "umoci-test-" + String(UUID().uuidString.prefix(8))
        defer { _ = try? run("/usr/sbin/runc", ["delete", "-f", id]) }
        ok(try run("/bin/sh", ["-c", "exec /usr/sbin/runc run -d -b '\(b.paths.bundle)' \(id) </dev/null >/dev/null 2>&1"]))
        let counter = b.paths.rootfs + "/root/counter"
        func lines() -> [String] {
            ((try? String(contentsOfFile: counter, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        usleep(500_000)
        let refresh = try umoci("repack", "--image", L + ":live", "--refresh-bundle", b.paths.bundle)
        ok(refresh)
        #expect(!refresh.stderr.contains("keeps serving the previous image"), "\(refresh)")
        let atRefresh = lines().count
        #expect(atRefresh > 0)
        usleep(600_000)
        #expect(ok(try run("/usr/sbin/runc", ["state", id])).contains("\"running\""))
        let after = lines()
        #expect(after.count > atRefresh)
        #expect(after == (0..<after.count).map { String($0) })
        #expect(ok(try run("/usr/sbin/runc", ["exec", id, "cat", "/etc/os-release"])).contains("umoci test busybox"))
    }

    /// Appends racing with repack --refresh-bundle: a change made after repack read the file
    /// and before the server rebased keeps the file in the upper directory, so no append is
    /// ever lost from the mount or from the next layer.
    @Test func writesRacingWithRefresh() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let b = try unpack(dir, L + ":basic")
        let file = b.paths.rootfs + "/appended"
        let stopWriting = Mutex(false)
        let written = Mutex(0)
        let writer = Thread {
            var i = 0
            while !stopWriting.withLock({ $0 }) {
                let fd = open(file, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                guard fd >= 0 else { break }
                let line = "\(i)\n"
                _ = line.withCString { write(fd, $0, line.utf8.count) }
                close(fd)
                i += 1
                written.withLock { $0 = i }
                usleep(2000)
            }
        }
        writer.start()
        defer { stopWriting.withLock { $0 = true } }
        usleep(100_000)
        var refreshed = 0
        for attempt in 0..<4 {
            let out = try umoci("repack", "--image", L + ":race\(attempt)", "--refresh-bundle", b.paths.bundle)
            if out.status == 0 { refreshed += 1 } else { #expect(out.stderr.contains("kept changing"), "\(out)") }
            #expect(!out.stderr.contains("keeps serving the previous image"), "\(out)")
            usleep(50_000)
        }
        #expect(refreshed > 0)
        stopWriting.withLock { $0 = true }
        usleep(100_000)
        let count = written.withLock { $0 }
        let expected = (0..<count).map { "\($0)\n" }.joined()
        #expect(try String(contentsOfFile: file, encoding: .utf8) == expected)
        ok(try umoci("repack", "--image", L + ":final", b.paths.bundle))
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":final", dir("theirs")]))
        #expect(try String(contentsOfFile: dir("theirs/appended"), encoding: .utf8) == expected)
    }

    /// The seed workflow, word for word (umoci-workflow.txt).
    @Test func seedWorkflow() throws {
        let dir = TemporaryDirectory()
        let L = dir("opensuse")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try umoci("tag", "--image", L + ":busybox", "42.2"))
        ok(try umoci("tag", "--image", L + ":busybox", "latest"))
        let bundle = MountedBundle(dir("bundle"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":42.2", bundle.paths.bundle))
        #expect(try String(contentsOfFile: bundle.paths.rootfs + "/etc/os-release", encoding: .utf8).contains("NAME="))
        try "some change\n".write(toFile: bundle.paths.rootfs + "/my_change", atomically: false, encoding: .utf8)
        ok(try umoci("repack", "--image", L + ":new", bundle.paths.bundle))
        let bundle2 = MountedBundle(dir("bundle2"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":new", bundle2.paths.bundle))
        #expect(try String(contentsOfFile: bundle2.paths.rootfs + "/my_change", encoding: .utf8) == "some change\n")
        ok(try umoci("config", "--author=Aleksa Sarai <>", "--image", L))
        ok(try umoci("config", "--author=Aleksa Sarai <>", "--image", L + ":new", "--tag", "authored"))
        #expect(try ImageLayout(opening: L).loadImage(tag: "authored").config.author == "Aleksa Sarai <>")
    }
}
