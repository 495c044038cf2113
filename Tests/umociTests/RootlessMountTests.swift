import CLinux
import Foundation
import Basics
import OCI
import BundleFormat
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// Whether an unprivileged user can mount FUSE here at all: Debian's setuid fusermount3.
let fusermountAvailable = access("/usr/bin/fusermount3", X_OK) == 0 && access("/dev/fuse", F_OK) == 0

/// A bundle mounted by an unprivileged user: `release()` (call it in a defer) unmounts it as
/// the user, and as root detaches whatever is left, so a failed test never leaves a mount
/// (nor a directory that root cannot remove: a mount without allow_other is the user's alone).
/// Runs the bundle with `process` as its spec's process under rootless runc as `user`, and
/// removes the container again.
func runc(_ user: UnprivilegedUser, _ b: UserMountedBundle, spec: JSONObject, process: JSONObject) throws -> Output {
    var spec = spec
    spec["process"] = .object(process)
    try Data(JSON.object(spec).serialized()).write(to: URL(fileURLWithPath: b.paths.config))
    let id = "rlm-" + String(UUID().uuidString.prefix(8))
    let out = try user.run("/usr/sbin/runc", ["--root", user.home + "/runc", "run", "-b", b.paths.bundle, id])
    _ = try? user.run("/usr/sbin/runc", ["--root", user.home + "/runc", "delete", "-f", id])
    return out
}

final class UserMountedBundle {
    let user: UnprivilegedUser
    let paths: BundlePaths

    init(_ user: UnprivilegedUser, _ path: String) {
        self.user = user
        paths = BundlePaths(path)
    }

    func release() {
        _ = try? user.run(ourUmoci, ["umount", paths.bundle])
        if (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8))?.contains(paths.rootfs) == true {
            umount2(paths.rootfs, Int32(MNT_DETACH))
        }
    }

    /// The /proc/mounts line of the bundle's rootfs.
    func mountLine() -> String? {
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        return mounts.split(separator: "\n").map(String.init).first { $0.split(separator: " ").dropFirst().first.map(String.init) == paths.rootfs }
    }
}

/// An unprivileged user's `unpack --rootless` (or with maps) mounts through fusermount3, the
/// mount reports owners through the maps, rootless runc runs on it, and repack writes the
/// image's true owners back; Debian's umoci, as root, extracts them.
@Suite(.enabled(if: fusermountAvailable, "no fusermount3 or /dev/fuse"), .serialized)
struct RootlessMountTests {
    init() {
        // Debian's default; this machine's /dev/fuse is 0600, which only root can use.
        chmod("/dev/fuse", 0o666)
    }

    /// `stat -c FORMAT` of paths under the mount, as the user (root cannot enter it).
    func stat(_ user: UnprivilegedUser, _ root: String, _ paths: [String], format: String = "%u:%g %A %n") throws -> [String] {
        // The user changes into the mount itself: root cannot (no allow_other).
        ok(try user.run("/bin/sh", ["-c", "cd \"$0\" && f=$1 && shift && exec stat -c \"$f\" \"$@\"", root, format] + paths)).split(separator: "\n").map(String.init)
    }

    @Test func rootlessUnpackMountsAsTheUser() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let b = UserMountedBundle(user, work + "/B")
        defer { b.release() }
        let out = try user.run(ourUmoci, ["unpack", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":basic", b.paths.bundle])
        ok(out)
        #expect(out.stderr.isEmpty, "\(out)")
        let line = b.mountLine() ?? ""
        #expect(line.contains(" fuse.umoci ") && line.contains("user_id=\(user.uid),group_id=\(user.gid)"), "\(line)")
        #expect(line.contains("nosuid") && line.contains("default_permissions"), "\(line)")
        let userAllowOther = (try? String(contentsOfFile: "/etc/fuse.conf", encoding: .utf8))?
            .split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces) == "user_allow_other" } ?? false
        #expect(line.contains("allow_other") == userAllowOther, "\(line)")
        let metadata = try readJSON(b.paths.metadata)
        #expect(metadata["unpack_mode"]?.string != "extract")
        #expect(metadata["map_options"]?.object?["rootless"] == .bool(true))
        #expect(try readJSON(b.paths.config)["linux"]?.object?["uidMappings"] == .array([.object(JSONObject([
            "containerID": .int(0), "hostID": .int(user.uid), "size": .int(1)]))]))

        // One id in the map: every file is the user's, as in umoci's rootless extraction;
        // devices are empty files with the device's permissions; setuid bits stay.
        let me = "\(user.uid):\(user.gid)"
        #expect(try stat(user, b.paths.rootfs, [".", "bigid", "home/user/notes", "bin/suid", "dev/null", "dev/loop0", "ustar/plain", "rel-link"]) == [
            "\(me) drwxr-xr-x .", "\(me) -rw-r--r-- bigid", "\(me) -rw------- home/user/notes", "\(me) -rwsr-xr-x bin/suid",
            "\(me) -rw-rw-rw- dev/null", "\(me) -rw-rw---- dev/loop0", "\(me) -rw-r----- ustar/plain", "\(me) lrwxrwxrwx rel-link",
        ])
        // Nothing was extracted: the upper directory is empty, and root cannot even enter.
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.paths.upper).isEmpty)

        // umount as the user (fusermount3), and mount again.
        ok(try user.run(ourUmoci, ["umount", b.paths.bundle]))
        #expect(b.mountLine() == nil)
        ok(try user.run(ourUmoci, ["mount", b.paths.bundle]))
        #expect(b.mountLine() != nil)
        #expect(try stat(user, b.paths.rootfs, ["bigid"]) == ["\(me) -rw-r--r-- bigid"])
    }

    /// With a range map the mount reports each image owner shifted into the range (no
    /// privilege needed: the server only reports them); an id outside the map shows as the
    /// mapped container root, and the kernel enforces permissions on the reported owners.
    @Test func mapsShiftReportedOwners() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let b = UserMountedBundle(user, work + "/B")
        defer { b.release() }
        ok(try user.run(ourUmoci, ["unpack", "--uid-map", "0:100000:65536", "--gid-map", "0:200000:65536", "--cache-dir", work + "/cache",
                                   "--image", L + ":basic", b.paths.bundle]))
        #expect(b.mountLine()?.contains("fuse.umoci") == true)
        #expect(try stat(user, b.paths.rootfs, ["home/user", "bigid", "ustar/plain", "dev/loop0", "etc/hostname"]) == [
            "101000:201000 drwx------ home/user", "100000:200000 -rw-r--r-- bigid", "100012:200034 -rw-r----- ustar/plain",
            "100000:200006 -rw-rw---- dev/loop0", "100000:200000 -rw-r--r-- etc/hostname",
        ])
        let denied = try user.run("/bin/cat", [b.paths.rootfs + "/home/user/notes"])
        #expect(denied.status != 0 && denied.stderr.contains("Permission denied"), "\(denied)")
        #expect(try readJSON(b.paths.config)["linux"]?.object?["uidMappings"] == .array([.object(JSONObject([
            "containerID": .int(0), "hostID": .int(100_000), "size": .int(65536)]))]))
    }

    /// Changes through the mount keep the image's owners: a copy-up records the lower owner in
    /// user.rootlesscontainers on the upper file; created files are the container root's; a
    /// chown to the user (the container's root) drops the recorded owner. Repack as the user
    /// writes the true owners; Debian's umoci extracts them as root.
    @Test func repackKeepsTheImageOwners() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let b = UserMountedBundle(user, work + "/B")
        defer { b.release() }
        ok(try user.run(ourUmoci, ["unpack", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":basic", b.paths.bundle]))
        let edits = """
            echo more >> home/user/notes && echo more >> bigid && echo new > made && chmod 4755 made && \
            mkdir newdir && rm ustar/plain && chmod 640 bin/suid && chown \(user.uid):\(user.gid) etc/hostname && chmod 600 dev/loop0 && \
            touch -d @1700000000 home/user/notes bigid made etc/hostname
            """
        ok(try user.run("/bin/sh", ["-c", "cd \"$0\" && " + edits, b.paths.rootfs]))
        let me = "\(user.uid):\(user.gid)"
        #expect(try stat(user, b.paths.rootfs, ["home/user/notes", "bigid", "made", "bin/suid", "dev/loop0"]) == [
            "\(me) -rw------- home/user/notes", "\(me) -rw-r--r-- bigid", "\(me) -rwsr-xr-x made", "\(me) -rw-r----- bin/suid",
            "\(me) -rw------- dev/loop0",
        ])
        // The upper directory holds the owners as umoci's rootless tooling reads them.
        func xattr(_ path: String) -> [UInt8]? { TestSupport.xattr(b.paths.upper + "/" + path, "user.rootlesscontainers") }
        #expect(xattr("bigid") == [0x08, 0xC0, 0x8D, 0xB7, 0x01, 0x10, 0xC1, 0x8D, 0xB7, 0x01])
        #expect(xattr("home/user/notes") == [0x08, 0xE8, 0x07, 0x10, 0xE8, 0x07])
        #expect(xattr("home/user") == [0x08, 0xE8, 0x07, 0x10, 0xE8, 0x07])
        #expect(xattr("dev/loop0") == [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x10, 0x06])
        #expect(xattr("made") == nil && xattr("etc/hostname") == nil)
        var st = Glibc.stat()
        #expect(Glibc.lstat(b.paths.upper + "/bigid", &st) == 0 && st.st_uid == user.uid)
        // Through the mount that xattr is no attribute of the file: not listed, not settable.
        let script = """
            import os
            os.setxattr("bigid", "user.other", b"1")
            print(sorted(os.listxattr("bigid")))
            try:
                os.getxattr("bigid", "user.rootlesscontainers")
            except OSError as e:
                print(e.errno)
            try:
                os.setxattr("bigid", "user.rootlesscontainers", b"")
            except OSError as e:
                print(e.errno)
            """
        #expect(ok(try user.run("/bin/sh", ["-c", "cd \"$0\" && exec python3 -c \"$1\"", b.paths.rootfs, script])) == "['user.other']\n61\n1\n")
        #expect(xattr("bigid") == [0x08, 0xC0, 0x8D, 0xB7, 0x01, 0x10, 0xC1, 0x8D, 0xB7, 0x01])

        ok(try user.run(ourUmoci, ["repack", "--image", L + ":new", b.paths.bundle]))
        let layer = try lastLayerListing(L, "new")
        #expect(layer.contains("bigid b'0' 0o644 3000000:3000001 7  [('user.other', '1')]"), "\(layer)")
        #expect(layer.contains("home/user/notes b'0' 0o600 1000:1000 1005  []"), "\(layer)")
        #expect(layer.contains("made b'0' 0o4755 0:0 4  []"), "\(layer)")
        #expect(layer.contains("bin/suid b'0' 0o640 0:0 10  []"), "\(layer)")
        #expect(layer.contains("etc/hostname b'0' 0o644 0:0 5  []"), "\(layer)")
        #expect(layer.contains("dev/loop0 b'0' 0o600 0:6 0  []"), "\(layer)")
        #expect(layer.contains("ustar/.wh.plain b'0' 0o0 0:0 0  []"), "\(layer)")
        #expect(!layer.contains { $0.hasPrefix("home/user/ ") || $0.hasPrefix("ustar/ ") }, "unchanged directories: \(layer)")
        #expect(!layer.joined().contains("rootlesscontainers"), "\(layer)")

        // As root, Debian's umoci extracts the image's owners for what was not touched and the
        // recorded ones for what was.
        let dir = TemporaryDirectory()
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":new", dir("R")]))
        func owner(_ path: String) throws -> String {
            var st = Glibc.stat()
            guard Glibc.lstat(dir("R/" + path), &st) == 0 else { throw StoreError.system("stat", path) }
            return "\(st.st_uid):\(st.st_gid)"
        }
        #expect(try owner("bigid") == "3000000:3000001" && owner("home/user/notes") == "1000:1000" && owner("home/user") == "1000:1000")
        #expect(try owner("made") == "0:0" && owner("etc/hostname") == "0:0" && owner("dev/loop0") == "0:6")
        #expect(try owner("dev/null") == "0:0")
        #expect(Glibc.lstat(dir("R/dev/null"), &st) == 0 && st.st_mode & S_IFMT == S_IFCHR)  // untouched: still the device
        #expect(Glibc.lstat(dir("R/bin/suid"), &st) == 0 && st.st_mode == S_IFREG | 0o640)
        #expect(!FileManager.default.fileExists(atPath: dir("R/ustar/plain")))
    }

    /// Rootless runc (as the user, --root in its home) runs the mounted bundle with the spec
    /// unpack wrote: the container is root, sees the image's files as root's, writes a file and
    /// chowns the image's 1000:1000 directory to root; repack as the user writes those owners
    /// and Debian's umoci extracts them.
    @Test func runcRunsOnTheMount() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let b = UserMountedBundle(user, work + "/B")
        defer { b.release() }
        ok(try user.run(ourUmoci, ["unpack", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":busybox", b.paths.bundle]))
        #expect(b.mountLine()?.contains("fuse.umoci") == true)
        let spec = try readJSON(b.paths.config)
        var process = spec[object: "process"]
        process["terminal"] = .bool(false)
        process["args"] = .strings(["sh", "-c", "id -u; stat -c '%u:%g %n' /home/user /etc/passwd; echo x > /root/made; echo y > /home/user/mine; chown 0:0 /home/user; chown 1000 /root/made; echo chown=$?; stat -c '%u:%g %n' /home/user /root/made"])
        let out = try runc(user, b, spec: spec, process: process)
        #expect(out.status == 0, "\(out)")
        #expect(out.stdout == "0\n0:0 /home/user\n0:0 /etc/passwd\nchown=1\n0:0 /home/user\n0:0 /root/made\n", "\(out)")
        #expect(out.stderr.contains("chown: /root/made: Invalid argument"), "\(out)")  // 1000 is not in the map

        ok(try user.run(ourUmoci, ["repack", "--image", L + ":ran", b.paths.bundle]))
        let layer = try lastLayerListing(L, "ran")
        #expect(layer.contains("root/made b'0' 0o644 0:0 2  []"), "\(layer)")
        #expect(layer.contains("home/user/mine b'0' 0o644 0:0 2  []"), "\(layer)")
        #expect(layer.contains { $0.hasPrefix("home/user b'5' 0o755 0:0 ") }, "\(layer)")
        let dir = TemporaryDirectory()
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":ran", dir("R")]))
        var st = Glibc.stat()
        #expect(Glibc.lstat(dir("R/home/user"), &st) == 0 && st.st_uid == 0 && st.st_gid == 0)
        #expect(Glibc.lstat(dir("R/root/made"), &st) == 0 && st.st_uid == 0)
        #expect(Glibc.lstat(dir("R/etc/passwd"), &st) == 0 && st.st_uid == 0)

        // The same image unpacked again: the container's root now owns /home/user in it.
        let b2 = UserMountedBundle(user, work + "/B2")
        defer { b2.release() }
        ok(try user.run(ourUmoci, ["unpack", "--uid-map", "0:100000:65536", "--gid-map", "0:100000:65536", "--cache-dir", work + "/cache",
                                   "--image", L + ":ran", b2.paths.bundle]))
        #expect(try stat(user, b2.paths.rootfs, ["home/user", "home/user/mine"], format: "%u:%g %n") == ["100000:100000 home/user", "100000:100000 home/user/mine"])
    }

    /// repack --refresh-bundle as the user: its server rebases onto the new image (the upper
    /// directory empties, the owners now come from the image), and the next layer holds only
    /// newer changes, with their true owners.
    @Test func refreshBundleAsTheUser() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        let b = UserMountedBundle(user, work + "/B")
        defer { b.release() }
        ok(try user.run(ourUmoci, ["unpack", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":basic", b.paths.bundle]))
        ok(try user.run("/bin/sh", ["-c", "cd \"$0\" && echo more >> home/user/notes && echo new > made", b.paths.rootfs]))
        ok(try user.run(ourUmoci, ["repack", "--refresh-bundle", "--image", L + ":new", b.paths.bundle]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: b.paths.upper).isEmpty)
        // "made" moved the root's mtime: a "." entry, as umoci writes it (Umoci06Tests).
        let listing = try lastLayerListing(L, "new")
        #expect(listing.contains { $0.hasPrefix(". b'5' 0o755 0:0 ") }, "\(listing)")
        #expect(listing.filter { !$0.hasPrefix("home/user ") && !$0.hasPrefix(". ") } == [
            "home/user/notes b'0' 0o600 1000:1000 1005  []", "made b'0' 0o644 0:0 4  []"])
        ok(try user.run("/bin/sh", ["-c", "cd \"$0\" && echo again >> bigid && cat home/user/notes | wc -c", b.paths.rootfs]))
        ok(try user.run(ourUmoci, ["repack", "--image", L + ":new2", b.paths.bundle]))
        let layer = try lastLayerListing(L, "new2")
        #expect(layer == ["bigid b'0' 0o644 3000000:3000001 8  []"], "\(layer)")
    }

    /// The user's subordinate range (/etc/subuid, /etc/subgid, which useradd fills in; added
    /// with usermod when it did not): start and count.
    func subordinateRange(_ user: UnprivilegedUser, _ file: String) throws -> (UInt32, UInt32) {
        func find() -> (UInt32, UInt32)? {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let f = line.split(separator: ":")
                if f.count == 3, f[0] == user.name, let start = UInt32(f[1]), let count = UInt32(f[2]) { return (start, count) }
            }
            return nil
        }
        if let found = find() { return found }
        ok(try run("/usr/sbin/usermod", [file.hasSuffix("subuid") ? "--add-subuids" : "--add-subgids", "400000-465535", user.name]))
        guard let found = find() else { throw StoreError("no range for \(user.name) in \(file)") }
        return found
    }

    /// With newuidmap (package uidmap) rootless runc maps the user's subordinate range too: the
    /// container sees the image's owners on the mount, chowns to other ids, and repack as the
    /// user writes those owners, which Debian's umoci extracts as root.
    @Test(.enabled(if: access("/usr/bin/newuidmap", X_OK) == 0, "no newuidmap (package uidmap)"))
    func runcWithASubordinateRange() throws {
        let user = try UnprivilegedUser()
        let (subuid, uidCount) = try subordinateRange(user, "/etc/subuid")
        let (subgid, gidCount) = try subordinateRange(user, "/etc/subgid")
        let L = try user.layout()
        let work = user.directory("w")
        let b = UserMountedBundle(user, work + "/B")
        defer { b.release() }
        let maps = ["--uid-map", "0:\(user.uid):1", "--uid-map", "1:\(subuid):\(uidCount)",
                    "--gid-map", "0:\(user.gid):1", "--gid-map", "1:\(subgid):\(gidCount)"]
        ok(try user.run(ourUmoci, ["unpack", "--cache-dir", work + "/cache"] + maps + ["--image", L + ":busybox", b.paths.bundle]))
        #expect(b.mountLine()?.contains("fuse.umoci") == true)
        // Outside the namespace the user sees the host ids (image uid 1000 is container 1000).
        #expect(try stat(user, b.paths.rootfs, ["home/user", "etc/passwd"], format: "%u:%g %n") == [
            "\(subuid + 999):\(subgid + 999) home/user", "\(user.uid):\(user.gid) etc/passwd"])

        let spec = try readJSON(b.paths.config)
        var process = spec[object: "process"]
        process["terminal"] = .bool(false)
        // umoci's spec gives root no CAP_CHOWN or CAP_DAC_OVERRIDE; a container that chowns has them.
        var caps = process[object: "capabilities"]
        for set in ["bounding", "effective", "permitted"] {
            caps[set] = .strings((caps[set]?.array?.compactMap(\.string) ?? []) + ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"])
        }
        process["capabilities"] = .object(caps)
        process["args"] = .strings(["sh", "-c", "id -u; stat -c '%u:%g %n' /home/user /etc/passwd; echo x > /root/made; chown 1000:50 /root/made; touch /home/user/f; chown 1000:1000 /home/user/f; chown 50 /etc/os-release; echo chown=$?; stat -c '%u:%g %n' /root/made /home/user/f /etc/os-release"])
        let out = try runc(user, b, spec: spec, process: process)
        #expect(out.status == 0, "\(out)")
        #expect(out.stdout == "0\n1000:1000 /home/user\n0:0 /etc/passwd\nchown=0\n1000:50 /root/made\n1000:1000 /home/user/f\n50:0 /etc/os-release\n", "\(out)")
        // Every upper file is the user's; the owners are in the xattr.
        var st = Glibc.stat()
        #expect(Glibc.lstat(b.paths.upper + "/root/made", &st) == 0 && st.st_uid == user.uid && st.st_gid == user.gid)

        ok(try user.run(ourUmoci, ["repack", "--image", L + ":ran", b.paths.bundle]))
        let layer = try lastLayerListing(L, "ran")
        #expect(layer.contains("root/made b'0' 0o644 1000:50 2  []"), "\(layer)")
        #expect(layer.contains("home/user/f b'0' 0o644 1000:1000 0  []"), "\(layer)")
        #expect(layer.contains { $0.hasPrefix("etc/os-release b'0' 0o644 50:0 ") }, "\(layer)")
        #expect(!layer.joined().contains("rootlesscontainers"), "\(layer)")
        let dir = TemporaryDirectory()
        ok(try run(debianUmoci, ["raw", "unpack", "--image", L + ":ran", dir("R")]))
        func owner(_ path: String) -> String {
            Glibc.lstat(dir("R/" + path), &st) == 0 ? "\(st.st_uid):\(st.st_gid)" : "missing"
        }
        #expect(owner("root/made") == "1000:50" && owner("home/user/f") == "1000:1000" && owner("etc/os-release") == "50:0")
        #expect(owner("home/user") == "1000:1000" && owner("etc/passwd") == "0:0" && owner("bin/busybox") == "0:0")
    }

    /// Without a usable /dev/fuse the rootless unpack extracts (umoci's format), saying why in
    /// one line; UMOCI_UNPACK_MODE=mount makes that an error.
    @Test func fallsBackToExtraction() throws {
        let user = try UnprivilegedUser()
        let L = try user.layout()
        let work = user.directory("w")
        chmod("/dev/fuse", 0o600)
        defer { chmod("/dev/fuse", 0o666) }
        let out = try user.run(ourUmoci, ["unpack", "--rootless", "--cache-dir", work + "/cache", "--image", L + ":busybox", work + "/B"])
        ok(out)
        #expect(out.stderr.split(separator: "\n").count == 1 && out.stderr.contains("/dev/fuse") && out.stderr.contains("extracting the rootfs instead"), "\(out)")
        #expect(try readJSON(work + "/B/umoci.json")["unpack_mode"]?.string == "extract")
        var st = Glibc.stat()
        #expect(Glibc.lstat(work + "/B/rootfs/home/user", &st) == 0 && st.st_uid == user.uid)
        let failed = try user.run("/usr/bin/env", ["UMOCI_UNPACK_MODE=mount", ourUmoci, "unpack", "--rootless", "--cache-dir", work + "/cache",
                                                   "--image", L + ":busybox", work + "/C"])
        fails(failed, containing: "/dev/fuse")
        #expect(!FileManager.default.fileExists(atPath: work + "/C"))
    }
}
