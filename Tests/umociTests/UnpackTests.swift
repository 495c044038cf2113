import CLinux
import Foundation
import LayerStore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

let fuseAvailable = access("/dev/fuse", R_OK | W_OK) == 0

/// A bundle unpacked by this tool, unmounted when the value goes away, whatever the test did.
final class MountedBundle {
    let paths: BundlePaths

    init(_ path: String) { paths = BundlePaths(path) }

    deinit {
        _ = try? run(ourUmoci, ["umount", paths.bundle])
        // Last resort, so that a failed test never leaves a mount for the next run.
        if (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8))?.contains(paths.rootfs) == true {
            umount2(paths.rootfs, Int32(MNT_DETACH))
        }
    }
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
        fails(try umoci("unpack", "--cache-dir", dir("cache"), "--image", fixtureLayout + ":basic", b.paths.bundle), containing: "already exists")
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.paths.bundle).sorted() == before)
    }

    @Test func failureLeavesNothingBehind() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let layout = try ImageLayout(opening: L)
        let layer = try layout.loadImage(tag: "basic").manifest.layers[0]
        try FileManager.default.removeItem(atPath: layout.blobPath(layer.digest))
        fails(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":basic", dir("bundle")), containing: "missing")
        #expect(!FileManager.default.fileExists(atPath: dir("bundle")))
        fails(try umoci("unpack", "--image", L + ":nope", dir("bundle")), containing: "not found")
        #expect(!FileManager.default.fileExists(atPath: dir("bundle")))
        #expect(!((try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? "").contains(dir("bundle")))
    }

    /// For every test image, the mounted tree is what Debian's umoci extracts.
    @Test(arguments: ["basic", "whiteouts", "formats", "big", "many", "dirlinks"])
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
        fails(try umoci("mount", b.paths.bundle), containing: "already mounted")
        ok(try umoci("umount", b.paths.bundle))
        fails(try umoci("umount", b.paths.bundle), containing: "not mounted")
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
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":new", dir("theirs")]))
        try expectSameTree(r, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
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
        let line = String(repeating: "x", count: 99) + "\n"
        let stopWriting = Mutex(false)
        let writer = Thread {
            let fd = open(file, O_WRONLY | O_CREAT | O_APPEND, 0o644)
            defer { close(fd) }
            while !stopWriting.withLock({ $0 }) {
                _ = line.withCString { write(fd, $0, 100) }
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
            #expect(data.count % 100 == 0 && data.split(separator: "\n").allSatisfy { $0.count == 99 })
        }
        stopWriting.withLock { $0 = true }
        usleep(100_000)
    }

    /// repack --refresh-bundle of a mounted bundle: the mount keeps working unchanged, and the
    /// next repack holds only the newer changes (and whiteouts for what was removed since).
    @Test func refreshBundleWhileMounted() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let b = try unpack(dir, L + ":whiteouts-gzip")
        let r = b.paths.rootfs
        try "1\n".write(toFile: r + "/first", atomically: false, encoding: .utf8)
        try "edited\n".write(toFile: r + "/a/y", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: r + "/newdir/sub", withIntermediateDirectories: true)
        try "n\n".write(toFile: r + "/newdir/sub/f", atomically: false, encoding: .utf8)
        ok(try umoci("repack", "--image", L + ":r1", "--refresh-bundle", b.paths.bundle))
        #expect(FileManager.default.fileExists(atPath: b.paths.baseline))
        #expect(try String(contentsOfFile: r + "/first", encoding: .utf8) == "1\n")

        try "2\n".write(toFile: r + "/second", atomically: false, encoding: .utf8)
        try FileManager.default.removeItem(atPath: r + "/first")
        try FileManager.default.removeItem(atPath: r + "/newdir")
        try "edited again\n".write(toFile: r + "/a/y", atomically: false, encoding: .utf8)
        ok(try umoci("repack", "--image", L + ":r2", b.paths.bundle))
        let layout = try ImageLayout(opening: L)
        let r1 = try layout.loadImage(tag: "r1"), r2 = try layout.loadImage(tag: "r2")
        #expect(r2.manifest.layers.count == r1.manifest.layers.count + 1)
        let listing = ok(try run("/bin/tar", ["-tzf", layout.blobPath(r2.manifest.layers.last!.digest)]))
        #expect(Set(listing.split(separator: "\n")) == [".wh.first", ".wh.newdir", "a/y", "second"], "\(listing)")
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":r2", dir("theirs")]))
        try expectSameTree(r, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        // Served again on the new base, the same upper directory shows the same tree.
        ok(try umoci("umount", b.paths.bundle))
        ok(try umoci("mount", b.paths.bundle))
        try expectSameTree(r, dir("theirs"), compareDirectoryMtime: { _ in false }, wholeSecondMtimes: true)
        ok(try umoci("repack", "--image", L + ":r3", b.paths.bundle))
        #expect(try layout.loadImage(tag: "r3").manifest.layers.count == r1.manifest.layers.count + 1)
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
