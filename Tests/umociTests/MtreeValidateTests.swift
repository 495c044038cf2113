import Foundation
import Basics
import OCI
import BundleFormat
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `umoci raw mtree-validate`, umoci 0.6's hidden command, as test/raw-mtree-validate.bats
/// uses it: on the manifests Debian's umoci and this tool write, and on a go-mtree manifest
/// with `time`. Deltas are go-mtree's lines on stdout; any delta is exit 1 with umoci's
/// "validation failed: N differences found".
@Suite struct MtreeValidateTests {
    func validate(_ args: String...) throws -> Output { try run(ourUmoci, ["raw", "mtree-validate"] + args) }

    func manifest(in bundle: String) throws -> String {
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: bundle).first { $0.hasSuffix(".mtree") })
        return bundle + "/" + name
    }

    @Test func bundlesOfDebianUmociAndThisTool() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        ok(try reference("unpack", "--image", L + ":basic", dir("debian")))
        ok(try umoci("unpack", "--extract", "--image", L + ":basic", dir("ours")))
        for bundle in [dir("debian"), dir("ours")] {
            let m = try manifest(in: bundle), rootfs = bundle + "/rootfs"
            #expect(ok(try validate("-K", "sha256digest", "-f", m, "-p", rootfs)) == "")
            #expect(ok(try validate("--umoci-keywords", "--manifest", m, "--path", rootfs)) == "")
            #expect(ok(try validate("--rootless", "--file", m, "-p", rootfs)) == "")

            // An mtime alone: tar_time differs (umoci's manifests have no "time").
            var st = stat()
            #expect(lstat(rootfs + "/etc/hostname", &st) == 0)
            ok(try run("/usr/bin/touch", ["-h", "-d", "1997-03-25T13:40:00.12345Z", rootfs + "/etc/hostname"]))
            let changed = try validate("-K", "sha256digest", "-f", m, "-p", rootfs)
            fails(changed, containing: "validation failed: 1 differences found")
            #expect(changed.stdout == #""etc/hostname": keyword "tar_time": expected \#(st.st_mtim.tv_sec).000000000; got 859297200.000000000"# + "\n")
            fails(try validate("--umoci-keywords", "-f", m, "-p", rootfs), containing: "validation failed: 1 differences found")
            // -k without a time keyword: no delta; -k with a digest the manifest lacks: one per file.
            #expect(ok(try validate("-k", "sha256digest", "-f", m, "-p", rootfs)) == "")
            let sha1 = try validate("-k", "sha1", "-f", m, "-p", rootfs)
            #expect(sha1.status == 1 && sha1.stdout.contains(#"keyword "sha1digest""#), "\(sha1)")
            let added = try validate("-K", "sha1digest", "-f", m, "-p", rootfs)
            #expect(added.status == 1 && added.stdout.contains(#"keyword "sha1digest""#), "\(added)")

            // A missing and an extra path.
            #expect(unlink(rootfs + "/etc/hostname") == 0)
            _ = FileManager.default.createFile(atPath: rootfs + "/extra", contents: Data())
            let paths = try validate("-k", "type", "-f", m, "-p", rootfs)
            fails(paths, containing: "validation failed: 2 differences found")
            #expect(paths.stdout == "\"etc/hostname\": missing path\n\"extra\": unexpected path\n")
        }
    }

    /// test/raw-mtree-validate.bats [tar_time]: a go-mtree manifest with `time` and one with
    /// `tar_time`; truncating the mtimes to the second breaks only the `time` one, unless one
    /// side is compared as `tar_time`.
    @Test func timeAndTarTime() throws {
        let dir = TemporaryDirectory()
        let rootfs = dir("rootfs")
        try FileManager.default.createDirectory(atPath: rootfs, withIntermediateDirectories: true)
        let date = "2025-09-05T13:05:10"
        for (name, fraction) in [("lowerhalf", ".1000"), ("upperhalf", ".8000"), ("tartime", ".0000")] {
            _ = FileManager.default.createFile(atPath: rootfs + "/" + name, contents: Data())
            ok(try run("/usr/bin/touch", ["-d", date + fraction + "Z", rootfs + "/" + name]))
        }
        ok(try run("/usr/bin/touch", ["-d", date + "Z", rootfs]))
        let unix = 1757077510
        var st = stat()
        #expect(lstat(rootfs, &st) == 0)
        let rootSize = st.st_size
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  // sha256 of nothing
        func manifest(_ time: (String) -> String) -> String {
            """
            #mtree
            /set type=file nlink=1 mode=0644 uid=0 gid=0
            . type=dir mode=0755 nlink=2 size=\(rootSize) \(time(""))
                lowerhalf size=0 sha256digest=\(empty) \(time(".1"))
                tartime size=0 sha256digest=\(empty) \(time(""))
                upperhalf size=0 sha256digest=\(empty) \(time(".8"))
            ..

            """
        }
        let timeManifest = dir("time.mtree"), tarManifest = dir("tartime.mtree")
        try manifest { "time=\(unix)." + ($0.isEmpty ? "000000000" : $0.dropFirst() + "00000000") }
            .write(toFile: timeManifest, atomically: true, encoding: .utf8)
        try manifest { _ in "tar_time=\(unix).000000000" }.write(toFile: tarManifest, atomically: true, encoding: .utf8)
        let keywords = "type,uid,gid,nlink,link,mode,flags,xattr,size,sha256digest"
        for m in [timeManifest, tarManifest] {
            #expect(ok(try validate("-p", rootfs, "-f", m)) == "")
        }
        ok(try validate("-k", keywords + ",tar_time", "-p", rootfs, "-f", timeManifest))
        ok(try validate("-k", keywords + ",time", "-p", rootfs, "-f", tarManifest))

        for name in ["lowerhalf", "upperhalf", "tartime"] { ok(try run("/usr/bin/touch", ["-d", date + "Z", rootfs + "/" + name])) }
        let truncated = try validate("-p", rootfs, "-f", timeManifest)
        fails(truncated, containing: "validation failed: 2 differences found")
        #expect(truncated.stdout == """
            "lowerhalf": keyword "time": expected \(unix).100000000; got \(unix).000000000
            "upperhalf": keyword "time": expected \(unix).800000000; got \(unix).000000000

            """)
        ok(try validate("-p", rootfs, "-f", tarManifest))
        ok(try validate("-k", keywords + ",tar_time", "-p", rootfs, "-f", timeManifest))
        ok(try validate("-k", keywords + ",time", "-p", rootfs, "-f", tarManifest))

        for name in ["lowerhalf", "upperhalf", "tartime"] { ok(try run("/usr/bin/touch", ["-d", "1997-03-25T13:40:00Z", rootfs + "/" + name])) }
        for m in [timeManifest, tarManifest] {
            let moved = try validate("-p", rootfs, "-f", m)
            fails(moved, containing: "validation failed: 3 differences found")
            for name in ["lowerhalf", "upperhalf", "tartime"] { #expect(moved.stdout.contains("\"\(name)\"")) }
        }
    }

    @Test func badArguments() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir("rootfs"), withIntermediateDirectories: true)
        try "#mtree\n. type=dir\n".write(toFile: dir("m"), atomically: true, encoding: .utf8)
        try "#mtree\nnot-the-root type=file\n".write(toFile: dir("bad"), atomically: true, encoding: .utf8)
        fails(try validate("-p", dir("rootfs")), containing: #"Required flag "manifest" not set"#)
        fails(try validate("-f", dir("m")), containing: #"Required flag "path" not set"#)
        fails(try validate("-f", "", "-p", dir("rootfs")), containing: "--manifest must be a valid path")
        fails(try validate("-f", dir("missing"), "-p", dir("rootfs")), containing: "open mtree manifest: ")
        fails(try validate("-f", dir("bad"), "-p", dir("rootfs")), containing: "parse mtree manifest: ")
        fails(try validate("-k", "nosuchkeyword", "-f", dir("m"), "-p", dir("rootfs")), containing: #"unknown keyword "nosuchkeyword""#)
        fails(try validate("-f", dir("m"), "-p", dir("missing")), containing: "check mtree manifest")
        #expect(ok(try validate("-f", dir("m"), "-p", dir("rootfs"))) == "")
    }
}
