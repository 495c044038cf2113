import Foundation
import OCI
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// The index cache where fresh accounts and daemons put it, and layout paths with a trailing
/// slash.
@Suite struct CacheAndPathTests {
    /// The environment of a user whose cache location comes from HOME alone.
    func homeOnly(_ home: String, tmp: String? = nil) -> [String: String] {
        var env = ["HOME": home, "XDG_CACHE_HOME": "", "UMOCI_CACHE_DIR": ""]
        if let tmp { env["TMPDIR"] = tmp }
        return env
    }

    @Test func cacheDirectoryIsCreatedWithItsParents() throws {
        let dir = TemporaryDirectory()
        let out = try umoci("raw", "unpack", "--image", fixtureLayout + ":basic", dir("r1"), environment: homeOnly(dir("new/home")))
        ok(out)
        #expect(out.stderr.isEmpty, "\(out)")
        #expect(FileManager.default.fileExists(atPath: dir("new/home/.cache/umoci/index/sha256")))
        var env = homeOnly(dir("home2"))
        env["XDG_CACHE_HOME"] = dir("xdg/a/b")
        ok(try umoci("raw", "unpack", "--image", fixtureLayout + ":basic", dir("r2"), environment: env))
        #expect(FileManager.default.fileExists(atPath: dir("xdg/a/b/umoci/index/sha256")))
    }

    /// A cache location that cannot be a directory: one warning line, then a private cache in
    /// the temporary directory, reused by the next run.
    @Test func unusableCacheFallsBackToAPrivateTemporaryCache() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir("tmp"), withIntermediateDirectories: true)
        let env = homeOnly("/dev/null", tmp: dir("tmp"))
        for target in ["r1", "r2"] {
            let out = try umoci("raw", "unpack", "--image", fixtureLayout + ":basic", dir(target), environment: env)
            ok(out)
            let lines = out.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(out)")
            #expect(out.stderr.contains("cannot use the index cache at /dev/null/.cache/umoci"), "\(out)")
            #expect(out.stderr.contains("using \(dir("tmp"))/umoci-cache-\(getuid())"), "\(out)")
        }
        var st = stat()
        #expect(stat(dir("tmp/umoci-cache-\(getuid())"), &st) == 0 && st.st_mode & 0o777 == 0o700 && st.st_uid == getuid())
        #expect(FileManager.default.fileExists(atPath: dir("tmp/umoci-cache-\(getuid())/index/sha256")))
        try expectSameTree(dir("r1"), dir("r2"))
    }

    /// A fallback location someone else could have prepared is not used.
    @Test func fallbackCacheMustBePrivate() throws {
        let dir = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir("tmp/umoci-cache-\(getuid())"), withIntermediateDirectories: true)
        chmod(dir("tmp/umoci-cache-\(getuid())"), 0o777)
        let out = try umoci("raw", "unpack", "--image", fixtureLayout + ":basic", dir("r"), environment: homeOnly("/dev/null", tmp: dir("tmp")))
        ok(out)
        #expect(out.stderr.contains("using \(dir("tmp"))/umoci-cache-"), "\(out)")
        #expect(!out.stderr.contains("using \(dir("tmp"))/umoci-cache-\(getuid())\n"), "\(out)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir("tmp/umoci-cache-\(getuid())")).isEmpty)
    }

    /// `layout/` names the layout in every command, as in umoci.
    @Test func trailingSlashInEveryCommand() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let S = L + "/"
        ok(try umoci("stat", "--image", S + ":basic"))
        #expect(ok(try umoci("ls", "--layout", S)).contains("basic\n"))
        ok(try umoci("new", "--image", S + ":empty"))
        ok(try umoci("tag", "--image", S + ":basic", "copy"))
        ok(try umoci("config", "--image", S + ":copy", "--config.user", "nobody"))
        ok(try umoci("raw", "unpack", "--cache-dir", dir("cache"), "--image", S + ":copy", dir("raw")))
        try "inserted\n".write(toFile: dir("file"), atomically: false, encoding: .utf8)
        ok(try umoci("insert", "--image", S + ":copy", dir("file"), "/inserted"))
        ok(try umoci("rm", "--image", S + ":empty"))
        ok(try umoci("gc", "--layout", S))
        #expect(try ImageLayout(opening: L).loadImage(tag: "copy").config.json["config"]?.object?["User"] == .string("nobody"))
    }

    @Test(.enabled(if: fuseAvailable, "FUSE is not available here (/dev/fuse)"))
    func trailingSlashUnpackAndRepack() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let bundle = MountedBundle(dir("bundle"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + "/:basic", bundle.paths.bundle))
        #expect(try readJSON(bundle.paths.metadata)["mount"]?.object?["layout"] == .string(L))
        try "new\n".write(toFile: bundle.paths.rootfs + "/added", atomically: false, encoding: .utf8)
        ok(try umoci("repack", "--image", L + "//:next", bundle.paths.bundle))
        #expect(try readJSON(bundle.paths.metadata)["mount"]?.object?["layout"] == .string(L))
        ok(try umoci("umount", bundle.paths.bundle))
        ok(try umoci("mount", bundle.paths.bundle))
        #expect(try String(contentsOfFile: bundle.paths.rootfs + "/added", encoding: .utf8) == "new\n")
    }
}
