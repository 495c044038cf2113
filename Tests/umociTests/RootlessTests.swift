import CLinux
import Foundation
import Basics
import OCI
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// A real unprivileged user made for one test (useradd), with a home and a work directory it
/// owns; removed with everything it owns when the value goes away, whatever the test did.
final class UnprivilegedUser {
    let name: String
    let uid: UInt32
    let gid: UInt32
    let dir: TemporaryDirectory
    var home: String { dir("home") }

    init() throws {
        let name = "umoci-rl-" + String(UUID().uuidString.prefix(8)).lowercased()
        let dir = TemporaryDirectory()
        chmod(dir.path, 0o755)
        let added = try TestSupport.run("/usr/sbin/useradd", ["-M", "-U", "-s", "/bin/sh", "-d", dir("home"), name])
        guard added.status == 0 else { throw StoreError("useradd \(name): \(added)") }
        guard let pw = getpwnam(name) else { throw StoreError("useradd \(name): no passwd entry afterwards") }
        (self.name, self.dir, uid, gid) = (name, dir, pw.pointee.pw_uid, pw.pointee.pw_gid)
        mkdir(dir("home"), 0o700)
        chown(dir("home"), uid, gid)
    }

    deinit {
        _ = try? TestSupport.run("/usr/sbin/userdel", ["-f", name])
    }

    /// A directory in the work directory, owned by the user.
    func directory(_ name: String) -> String {
        let path = dir(name)
        mkdir(path, 0o755)
        chown(path, uid, gid)
        return path
    }

    /// A copy of the test images the user owns.
    func layout() throws -> String {
        let copy = dir("L")
        ok(try TestSupport.run("/bin/cp", ["-a", fixtureLayout, copy]))
        ok(try TestSupport.run("/bin/chown", ["-R", "\(uid):\(gid)", copy]))
        return copy
    }

    /// Runs `program` as the user (runuser), with HOME set to its home and no XDG_* leaking in.
    @discardableResult
    func run(_ program: String, _ arguments: [String], directory: String? = nil) throws -> Output {
        try TestSupport.run("/usr/sbin/runuser", ["-u", name, "--", "/usr/bin/env", "-u", "XDG_RUNTIME_DIR", "-u", "XDG_CACHE_HOME",
                                                 "-u", "UMOCI_CACHE_DIR", "HOME=" + home, program] + arguments, directory: directory)
    }
}

/// The entries of the last layer of `layout`:`tag` as Python's tarfile reads them (name, type,
/// mode, owner, size, link, xattrs; not mtimes), one line each.
func lastLayerListing(_ layout: String, _ tag: String) throws -> [String] {
    let opened = try ImageLayout(opening: layout)
    let blob = opened.blobPath(try opened.loadImage(tag: tag).manifest.layers.last!.digest)
    let script = """
        import sys, tarfile
        for m in tarfile.open(sys.argv[1]).getmembers():
            x = sorted((k[13:], v) for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr."))
            print(m.name, m.type, oct(m.mode), "%d:%d" % (m.uid, m.gid), m.size, m.linkname, x)
        """
    return ok(try run("/usr/bin/python3", ["-c", script, blob])).split(separator: "\n").map(String.init)
}

/// `unpack --rootless` (and --uid-map/--gid-map), and repack of such bundles, as umoci does
/// them: checked against Debian's umoci run as the same unprivileged user on the same image.
@Suite(.serialized) struct RootlessTests {
    func lstat(_ path: String) throws -> stat {
        var st = stat()
        guard Glibc.lstat(path, &st) == 0 else { throw StoreError.system("stat", path) }
        return st
    }

    /// The same tree as Debian's umoci --rootless as the same user: every file the user's,
    /// image owners in user.rootlesscontainers, devices as empty files, setuid kept, hardlinks,
    /// xattrs the user may set; the same umoci.json map_options and runtime spec.
    @Test func unpackMatchesDebianUmoci() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let ours = try user.run(ourUmoci, ["unpack", "--extract", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":basic", work + "/O"])
        ok(ours)
        #expect(ours.stderr.contains("rootless{dev/null} creating empty file in place of device 1:3"), "\(ours)")
        #expect(ours.stderr.contains("ignoring (usually) harmless EPERM on setxattr \"trusted.overlay.x\""), "\(ours)")
        ok(try user.run(debianUmoci, ["unpack", "--rootless", "--image", L + ":basic", work + "/D"]))
        try expectSameTree(work + "/O/rootfs", work + "/D/rootfs", compareDirectoryMtime: { _ in false })

        // What the tree holds, stated independently of Debian's umoci.
        let root = work + "/O/rootfs"
        for path in ["", "/bigid", "/home/user/notes", "/bin/suid", "/dev/null", "/ustar/plain", "/rel-link"] {
            let st = try lstat(root + path)
            #expect(st.st_uid == user.uid && st.st_gid == user.gid, "\(path) is owned by \(st.st_uid):\(st.st_gid)")
        }
        #expect(try lstat(root + "/dev/null").st_mode == S_IFREG | 0o666)
        #expect(try lstat(root + "/dev/loop0").st_mode == S_IFREG | 0o660)
        #expect(try lstat(root + "/dev/fifo").st_mode == S_IFIFO | 0o600)
        #expect(try lstat(root + "/bin/suid").st_mode == S_IFREG | 0o4755)
        #expect(try lstat(root + "/bin/sgid").st_mode == S_IFREG | 0o2711)
        #expect(try lstat(root + "/hard-a").st_ino == (try lstat(root + "/etc/hard-c")).st_ino)
        // uid 3000000, gid 3000001; 1000:1000; gid 6 only (uid 0 is "no change").
        #expect(xattr(root + "/bigid", "user.rootlesscontainers") == [0x08, 0xC0, 0x8D, 0xB7, 0x01, 0x10, 0xC1, 0x8D, 0xB7, 0x01])
        #expect(xattr(root + "/home/user/notes", "user.rootlesscontainers") == [0x08, 0xE8, 0x07, 0x10, 0xE8, 0x07])
        #expect(xattr(root + "/dev/loop0", "user.rootlesscontainers") == [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x10, 0x06])
        #expect(xattr(root + "/bin/suid", "user.rootlesscontainers") == nil)
        #expect(xattr(root + "/xattr-file", "user.comment") == Array("hello".utf8))

        let ourMeta = try readJSON(work + "/O/umoci.json"), theirMeta = try readJSON(work + "/D/umoci.json")
        #expect(ourMeta["map_options"] == theirMeta["map_options"])
        #expect(ourMeta["map_options"]?.object?["uid_mappings"] == .array([.object(JSONObject([
            "containerID": .int(0), "hostID": .int(user.uid), "size": .int(1)]))]))
        #expect(ourMeta["unpack_mode"]?.string == "extract")
        let ourSpec = try readJSON(work + "/O/config.json"), theirSpec = try readJSON(work + "/D/config.json")
        for key in ["mounts", "linux", "process", "root", "hostname"] {
            #expect(ourSpec[key] == theirSpec[key], "config.json \(key):\n  ours:   \(ourSpec[key]?.text ?? "-")\n  theirs: \(theirSpec[key]?.text ?? "-")")
        }
    }

    /// Repack as the user writes the image's owners back (from user.rootlesscontainers, root
    /// for the rest), never the xattr itself: the same layer as Debian's umoci's repack of the
    /// same edits, and Debian's umoci, as root, extracts the image's owners from it.
    @Test func repackRestoresOwners() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let LD = user.dir("LD")
        ok(try run("/bin/cp", ["-a", L, LD]))
        let work = user.directory("w")
        ok(try user.run(ourUmoci, ["unpack", "--extract", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":basic", work + "/O"]))
        ok(try user.run(debianUmoci, ["unpack", "--rootless", "--image", LD + ":basic", work + "/D"]))
        // After a second, so that the directories umoci stamps with the unpack time change too;
        // the files get one mtime, so that the two layers can be compared.
        let edits = """
            sleep 1 && echo more >> home/user/notes && echo more >> bigid && echo new > made && chmod 4755 made && \
            mkdir newdir && rm ustar/plain && chmod 640 bin/suid && \
            python3 -c 'import os; os.setxattr("etc/hostname", "user.added", b"1")' && \
            touch -d @1700000000 home/user/notes bigid made etc/hostname
            """
        for bundle in ["O", "D"] {
            ok(try user.run("/bin/sh", ["-c", edits], directory: work + "/" + bundle + "/rootfs"))
        }
        let LX = user.dir("LX")
        ok(try run("/bin/cp", ["-a", L, LX]))
        ok(try user.run(ourUmoci, ["repack", "--image", L + ":new", work + "/O"]))
        ok(try user.run(debianUmoci, ["repack", "--image", LD + ":new", work + "/D"]))
        ok(try user.run(ourUmoci, ["repack", "--image", LX + ":new", work + "/D"]))  // their bundle, our repack
        let ours = try lastLayerListing(L, "new"), theirs = try lastLayerListing(LD, "new")
        #expect(try lastLayerListing(LX, "new") == theirs)
        #expect(ours == theirs, "ours:\n\(ours.joined(separator: "\n"))\ntheirs:\n\(theirs.joined(separator: "\n"))")
        #expect(ours.contains("bigid b'0' 0o644 3000000:3000001 7  []"), "\(ours)")
        #expect(ours.contains("home/user/notes b'0' 0o600 1000:1000 1005  []"), "\(ours)")
        #expect(ours.contains("made b'0' 0o4755 0:0 4  []"), "\(ours)")
        #expect(!ours.joined().contains("rootlesscontainers"), "\(ours)")

        // As root, Debian's umoci extracts the image's owners (and real devices) again.
        let dir = TemporaryDirectory()
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":new", dir("R")]))
        let bigid = try lstat(dir("R/bigid")), notes = try lstat(dir("R/home/user/notes")), made = try lstat(dir("R/made"))
        #expect(bigid.st_uid == 3_000_000 && bigid.st_gid == 3_000_001)
        #expect(notes.st_uid == 1000 && notes.st_gid == 1000)
        #expect(made.st_uid == 0 && made.st_mode == S_IFREG | 0o4755)
        #expect(try lstat(dir("R/dev/loop0")).st_mode & S_IFMT == S_IFBLK)
        #expect(try lstat(dir("R/ustar")).st_uid == 0)
        #expect(!FileManager.default.fileExists(atPath: dir("R/ustar/plain")))
        ok(try run(debianUmoci, ["raw", "unpack", "--image", LD + ":new", dir("RD")]))
        try expectSameTree(dir("R"), dir("RD"), compareDirectoryMtime: { _ in false })
    }

    /// The rootless fixture (0000 files, setuid files of other owners, a hardlinked file and a
    /// symlink of a non-root owner, a read-only directory, a layer with its own
    /// user.rootlesscontainers, a device) through unpack, edits and repack, as the user and as
    /// Debian's umoci does it; and Debian's umoci repacks our bundle to the same layer. As in
    /// umoci, a 0000 file loses its owner (the mode is set first, then the xattr is refused).
    @Test func hardCasesAgainstDebianUmoci() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/fixtures/make_image.py").path
        ok(try user.run("/usr/bin/python3", [script, L, "rootless"]))
        let LD = user.dir("LD")
        ok(try run("/bin/cp", ["-a", L, LD]))
        let work = user.directory("w")
        let ours = try user.run(ourUmoci, ["unpack", "--extract", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":rootless", work + "/O"])
        ok(ours)
        #expect(ours.stderr.contains("rootless{forged} ignoring special xattr user.rootlesscontainers stored in layer"), "\(ours)")
        #expect(ours.stderr.contains("rootless{usr/bin/owned-link} ignoring (usually) harmless EPERM on setxattr \"user.rootlesscontainers\""), "\(ours)")
        ok(try user.run(debianUmoci, ["unpack", "--rootless", "--image", LD + ":rootless", work + "/D"]))
        #expect(ours.stderr.contains("rootless{etc/gshadow} ignoring (usually) harmless EPERM on setxattr \"user.rootlesscontainers\""), "\(ours)")
        #expect(xattr(work + "/O/rootfs/etc/gshadow", "user.rootlesscontainers") == nil)
        #expect(xattr(work + "/O/rootfs/forged", "user.rootlesscontainers") == [0x08, 0x07, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])  // uid 7, not the layer's
        #expect(xattr(work + "/O/rootfs/usr/bin/shared-link", "user.rootlesscontainers") == [0x08, 0xE8, 0x07, 0x10, 0x64])
        #expect(try lstat(work + "/O/rootfs/usr/bin/mine").st_mode == S_IFREG | 0o6750)
        #expect(try lstat(work + "/O/rootfs/etc/shadow").st_mode == S_IFREG)
        try expectSameTree(work + "/O/rootfs", work + "/D/rootfs", compareDirectoryMtime: { _ in false })

        let edits = """
            chmod 600 etc/shadow etc/gshadow && echo x >> etc/shadow && echo y >> etc/gshadow && \
            chmod 000 etc/shadow etc/gshadow && echo z >> usr/bin/shared && echo w >> usr/bin/mine && \
            touch -d @1700000000 etc/shadow etc/gshadow usr/bin/shared usr/bin/mine
            """
        for bundle in ["O", "D"] {
            ok(try user.run("/bin/sh", ["-c", edits], directory: work + "/" + bundle + "/rootfs"))
        }
        let LX = user.dir("LX")
        ok(try run("/bin/cp", ["-a", L, LX]))
        ok(try user.run(ourUmoci, ["repack", "--image", L + ":new", work + "/O"]))
        ok(try user.run(debianUmoci, ["repack", "--image", LD + ":new", work + "/D"]))
        ok(try user.run(debianUmoci, ["repack", "--image", LX + ":new", work + "/O"]))  // our bundle, their repack
        let layer = try lastLayerListing(L, "new"), theirs = try lastLayerListing(LD, "new")
        #expect(layer == theirs, "ours:\n\(layer.joined(separator: "\n"))\ntheirs:\n\(theirs.joined(separator: "\n"))")
        #expect(try lastLayerListing(LX, "new") == theirs)
        #expect(layer.contains("usr/bin/shared-link b'1' 0o644 1000:100 0 usr/bin/shared []"), "\(layer)")
        #expect(layer.contains("etc/gshadow b'0' 0o0 0:0 17  []"), "\(layer)")

        let dir = TemporaryDirectory()
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":new", dir("R")]))
        let g = try lstat(dir("R/etc/gshadow")), shared = try lstat(dir("R/usr/bin/shared-link")), dev = try lstat(dir("R/dev-null"))
        #expect(g.st_gid == 0 && g.st_mode == S_IFREG && g.st_size == 17)  // the owner lost, as in umoci
        let sharedIno = try lstat(dir("R/usr/bin/shared")).st_ino
        #expect(shared.st_uid == 1000 && shared.st_gid == 100 && shared.st_ino == sharedIno)
        #expect(dev.st_mode & S_IFMT == S_IFCHR && dev.st_uid == 5)
        #expect(try lstat(dir("R/forged")).st_uid == 7)
        #expect(try lstat(dir("R/usr/bin/su")).st_mode == S_IFREG | 0o4755)
    }

    /// The generated config.json runs under runc as the user (rootless runc, user namespace
    /// with the single-id map): the container is root, sees the user's files as root's, and
    /// what it writes is repacked as root's.
    @Test func runcRunsTheBundle() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let B = work + "/B"
        ok(try user.run(ourUmoci, ["unpack", "--extract", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":busybox", B]))
        var spec = try readJSON(B + "/config.json")
        var process = spec[object: "process"]
        process["terminal"] = .bool(false)
        process["args"] = .strings(["sh", "-c", "id -u; stat -c '%u:%g %n' /home/user /etc/passwd; echo x > /root/made; chown 0:0 /root/made; chown 1000 /root/made; echo chown=$?"])
        spec["process"] = .object(process)
        try Data(JSON.object(spec).serialized()).write(to: URL(fileURLWithPath: B + "/config.json"))
        let id = "rl-" + String(UUID().uuidString.prefix(8))
        let out = try user.run("/usr/sbin/runc", ["--root", user.home + "/runc", "run", "-b", B, id])
        _ = try? user.run("/usr/sbin/runc", ["--root", user.home + "/runc", "delete", "-f", id])
        #expect(out.status == 0, "\(out)")
        #expect(out.stdout == "0\n0:0 /home/user\n0:0 /etc/passwd\nchown=1\n", "\(out)")
        #expect(out.stderr.contains("chown: /root/made: Invalid argument"), "\(out)")
        // Written by the container's root: the user's file, without an xattr: root's in the layer.
        ok(try user.run(ourUmoci, ["repack", "--image", L + ":ran", B]))
        let layer = try lastLayerListing(L, "ran")
        #expect(layer.contains("root/made b'0' 0o644 0:0 2  []"), "\(layer)")
        #expect(!layer.contains { $0.hasPrefix("home/") }, "\(layer)")
    }

    /// What LXC's oci template does in an unprivileged container: `umoci --log=error unpack
    /// --rootless` as root of a user namespace (here `unshare -r` by the user): the same tree and
    /// map options as Debian's umoci there, devices as empty files, nothing on stderr.
    @Test func insideAUserNamespace() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let ours = try user.run("/usr/bin/unshare", ["-r", ourUmoci, "--log=error", "unpack", "--rootless", "--cache-dir", work + "/cache",
                                                     "--image", L + ":basic", work + "/O"])
        ok(ours)
        #expect(ours.stderr.isEmpty, "\(ours)")
        ok(try user.run("/usr/bin/unshare", ["-r", debianUmoci, "--log=error", "unpack", "--rootless", "--image", L + ":basic", work + "/D"]))
        try expectSameTree(work + "/O/rootfs", work + "/D/rootfs", compareDirectoryMtime: { _ in false })
        #expect(try readJSON(work + "/O/umoci.json")["map_options"] == (try readJSON(work + "/D/umoci.json"))["map_options"])
        #expect(try lstat(work + "/O/rootfs/dev/null").st_mode == S_IFREG | 0o666)
        #expect(try lstat(work + "/O/rootfs/bigid").st_uid == user.uid)
    }

    /// Maps are umoci's `container:host[:size]`; errors name the flag; explicit mount mode says
    /// in one line that it extracts; with --uid-map/--gid-map as root, owners are shifted into
    /// the range and back, and an id outside it is umoci's error.
    @Test func mapsAndModes() throws {
        let dir = TemporaryDirectory()
        fails(try umoci("unpack", "--uid-map", "0:1000:x", "--image", fixtureLayout + ":busybox", dir("a")),
              containing: "failure parsing --uid-map 0:1000:x: invalid size in mapping")
        fails(try umoci("unpack", "--gid-map", "1", "--image", fixtureLayout + ":busybox", dir("a")),
              containing: "failure parsing --gid-map 1: invalid number of fields in mapping")
        #expect(!FileManager.default.fileExists(atPath: dir("a")))

        let maps = ["--uid-map", "0:100000:65536", "--gid-map", "0:200000:65536"]
        let out = try run(ourUmoci, ["unpack", "--cache-dir", dir("cache")] + maps + ["--image", fixtureLayout + ":busybox", dir("O")],
                          environment: ["UMOCI_UNPACK_MODE": "mount"])
        ok(out)
        #expect(out.stderr.split(separator: "\n").count == 1 && out.stderr.contains("extracting the rootfs instead"), "\(out)")
        ok(try run(debianUmoci, ["unpack"] + maps + ["--image", fixtureLayout + ":busybox", dir("D")]))
        try expectSameTree(dir("O/rootfs"), dir("D/rootfs"), compareDirectoryMtime: { _ in false })
        let home = try lstat(dir("O/rootfs/home/user"))
        #expect(home.st_uid == 101_000 && home.st_gid == 201_000)
        #expect(try readJSON(dir("O/umoci.json"))["map_options"] == (try readJSON(dir("D/umoci.json")))["map_options"])
        let ourLinux = try readJSON(dir("O/config.json"))["linux"], theirLinux = try readJSON(dir("D/config.json"))["linux"]
        #expect(ourLinux == theirLinux, "ours: \(ourLinux?.text ?? "-")\ntheirs: \(theirLinux?.text ?? "-")")

        // Back through the maps on repack; a host id outside them cannot go into a layer.
        ok(try run("/bin/cp", ["-a", fixtureLayout, dir("L")]))
        ok(try run("/bin/sh", ["-c", "echo x > made && chown 100005:200007 made", ], directory: dir("O/rootfs")))
        ok(try umoci("repack", "--image", dir("L") + ":mapped", dir("O")))
        #expect(try lastLayerListing(dir("L"), "mapped").contains("made b'0' 0o644 5:7 2  []"))
        ok(try run("/bin/chown", ["7", dir("O/rootfs/made")]))
        fails(try umoci("repack", "--image", dir("L") + ":bad", dir("O")), containing: "host id 7 cannot be mapped to a container id")

        // basic has uid 3000000: outside the range, as in umoci.
        fails(try umoci("unpack", "--cache-dir", dir("cache"), "--uid-map", "0:100000:65536", "--image", fixtureLayout + ":basic", dir("X")),
              containing: "container id 3000000 cannot be mapped to a host id")
    }

    /// A user other than root without --rootless or maps unpacks by extraction (as umoci, it
    /// then fails on the first owner it cannot set), saying so in one line when mount was asked
    /// for. (With --rootless or maps the user's unpack mounts: RootlessMountTests.)
    @Test func unprivilegedUserExtracts() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let failed = try user.run("/usr/bin/env", ["UMOCI_UNPACK_MODE=mount", ourUmoci, "unpack", "--cache-dir", work + "/cache",
                                                   "--image", L + ":busybox", work + "/C"])
        #expect(failed.status == 1 && failed.stderr.contains("chown") && failed.stderr.contains("Operation not permitted"), "\(failed)")
        #expect(failed.stderr.split(separator: "\n").count == 2 && failed.stderr.contains("extracting the rootfs instead"), "\(failed)")
        #expect(!FileManager.default.fileExists(atPath: work + "/C/rootfs"))
    }
}
