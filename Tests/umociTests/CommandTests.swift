import Foundation
import OCI
import Testing
import TestSupport

/// The image commands on real layouts in temporary directories, with Debian's umoci 0.4.7 as
/// the oracle where both tools must produce the same bytes.
@Suite struct CommandTests {
    @Test func initCreatesAnEmptyLayoutOnce() throws {
        let dir = TemporaryDirectory()
        ok(try umoci("init", "--layout", dir("L")))
        #expect(try readJSON(dir("L/oci-layout"))["imageLayoutVersion"] == .string("1.0.0"))
        #expect(try readJSON(dir("L/index.json"))["manifests"] == .array([]))
        #expect(FileManager.default.fileExists(atPath: dir("L/blobs/sha256")))
        fails(try umoci("init", "--layout", dir("L")), containing: "already exists")
        fails(try umoci("init", "--layout", dir("a:b")), containing: "must not contain ':'")
        fails(try umoci("init"), containing: "missing mandatory argument: --layout")
    }

    @Test func tagsListInIndexOrderAndMoveToTheEndWhenRetagged() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        for tag in ["alpha", "Zed", "0num", "a/b:c--d"] { ok(try umoci("tag", "--image", L + ":t", tag)) }
        ok(try umoci("tag", "--image", L + ":t", "alpha"))
        #expect(ok(try umoci("ls", "--layout", L)) == "t\nZed\n0num\na/b:c--d\nalpha\n")
        ok(try umoci("rm", "--image", L + ":Zed"))
        ok(try umoci("remove", "--image", L + ":never-there"))
        #expect(ok(try umoci("list", "--layout", L)) == "t\n0num\na/b:c--d\nalpha\n")
        fails(try umoci("tag", "--image", L + ":t"), containing: "expected <new-tag>")
        fails(try umoci("tag", "--image", L + ":t", "bad tag"), containing: "invalid reference")
        fails(try umoci("tag", "--image", L + ":nope", "x"), containing: "not found")
    }

    /// The same edits through both tools give byte-identical config blobs: same fields, same
    /// order, same escaping, same history entry.
    @Test func configWritesWhatDebianUmociWrites() throws {
        let dir = TemporaryDirectory()
        let edits: [[String]] = [
            ["--config.user", "foo", "--config.exposedports", "80/tcp", "--config.exposedports", "53/udp",
             "--config.env", "A=1", "--config.env", "B=2", "--config.env", "A=3",
             "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c", "--config.cmd", "echo <hi> & bye",
             "--config.volume", "/v1", "--config.volume", "/v2", "--config.label", "k=v", "--config.label", "k2=v2",
             "--config.label", "k=v3", "--config.workingdir", "/w", "--config.stopsignal", "SIGTERM",
             "--created", "2020-01-02T03:04:05.500Z", "--author", "Some One <s@e>", "--architecture", "arm64",
             "--os", "freebsd", "--manifest.annotation", "a=b", "--history.created", "2021-01-01T00:00:00Z",
             "--history.comment", "first"],
            ["--clear", "config.env", "--config.env", "Z=1", "--config.env", "B=9", "--clear", "config.labels",
             "--config.user", "", "--history.created", "2021-01-02T00:00:00+02:00", "--history.author", "ha",
             "--history.created_by", "cb"],
            ["--no-history", "--config.workingdir", "", "--clear", "config.cmd", "--clear", "config.volume"],
        ]
        var configs: [String: JSONObject] = [:]
        for (name, tool) in [("ours", ourUmoci), ("debian", debianUmoci)] {
            let L = dir(name)
            ok(try run(tool, ["init", "--layout", L]))
            ok(try run(tool, ["new", "--image", L + ":t"]))
            for edit in edits {
                ok(try run(tool, ["config", "--image", L + ":t"] + edit))
            }
            let image = try loadImage(L, "t")
            configs[name] = image.config
            #expect(image.manifest["annotations"]?.object?["a"] == .string("b"))
        }
        let ours = try #require(configs["ours"]), theirs = try #require(configs["debian"])
        #expect(ours == theirs)
        #expect(JSON.object(ours).text == JSON.object(theirs).text)
    }

    @Test func configWithTagLeavesTheOriginalAlone() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let before = try loadImage(L, "t")
        ok(try umoci("config", "--image", L + ":t", "--tag", "t2", "--config.user", "bob"))
        #expect(try loadImage(L, "t").config == before.config)
        #expect(try loadImage(L, "t2").config["config"]?.object?["User"] == .string("bob"))
        fails(try umoci("config", "--image", L + ":t", "--tag", "bad tag"), containing: "invalid tag")
    }

    /// Fields this tool does not model survive an edit (Debian's umoci drops them).
    @Test func configKeepsFieldsItDoesNotModel() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let layout = try ImageLayout(opening: L)
        var image = try layout.loadImage(tag: "t")
        image.config.json["zzunknown"] = .object(JSONObject(["n": .number("1.50")]))
        var run = image.config.runConfig
        run["Healthcheck"] = .object(JSONObject(["Test": .strings(["CMD", "true"])]))
        image.config.runConfig = run
        var manifest = image.manifest
        manifest.annotations = ["q": "r"]
        image.manifest = manifest
        try layout.commit(image, tag: "t")
        var rawManifest = try loadImage(L, "t").manifest
        #expect(rawManifest["annotations"] != nil)

        ok(try umoci("config", "--image", L + ":t", "--config.user", "z"))
        let after = try loadImage(L, "t")
        #expect(after.config["zzunknown"]?.object?["n"] == .number("1.50"))
        #expect(after.config["config"]?.object?["Healthcheck"] != nil)
        #expect(after.config["config"]?.object?["User"] == .string("z"))
        rawManifest = after.manifest
        #expect(rawManifest["annotations"]?.object?["q"] == .string("r"))
    }

    @Test func sourceDateEpochSetsCreatedTimes() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t", environment: ["SOURCE_DATE_EPOCH": "1234"]))
        ok(try umoci("config", "--image", L + ":t", "--author", "a", environment: ["SOURCE_DATE_EPOCH": "1234"]))
        let config = try loadImage(L, "t").config
        #expect(config["created"] == .string("1970-01-01T00:20:34Z"))
        #expect(config["history"]?.array?.first?.object?["created"] == .string("1970-01-01T00:20:34Z"))
        fails(try umoci("new", "--image", L + ":u", environment: ["SOURCE_DATE_EPOCH": "soon"]), containing: "SOURCE_DATE_EPOCH")
    }

    @Test func globalFlags() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        let verbose = try umoci("--log=info", "new", "--image", L + ":t")
        ok(verbose)
        #expect(verbose.stderr.contains("created new tag for image manifest: t"))
        ok(try umoci("--verbose", "ls", "--layout", L))
        ok(try umoci("ls", "--layout", L, "--log", "error"))
        fails(try umoci("--verbose", "--log=info", "ls", "--layout", L), containing: "mutually exclusive")
        fails(try umoci("--log=loud", "ls", "--layout", L), containing: "invalid level")
        #expect(ok(try umoci("--version")).hasPrefix("umoci version "))
        #expect(ok(try umoci("--help")).contains("config"))
        #expect(ok(try umoci("config", "--help")).contains("--config.user"))
    }

    /// Every bad input is one line on stderr, exit status 1, and the layout exactly as it was.
    @Test func errorsLeaveTheLayoutUntouched() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let before = snapshot(L)
        let cases: [([String], String)] = [
            (["stat"], "missing mandatory argument: --image"),
            (["stat", "--image", L + ":Bad Tag!"], "invalid tag"),
            (["stat", "--image", L + ":missing"], "not found"),
            (["stat", "--image", dir("nowhere") + ":t"], "not a directory or does not exist"),
            (["stat", "--image", L + ":t", "extra"], "expected none"),
            (["config", "--image", L + ":t", "--config.env", "NOEQ"], "config.env: must contain '='"),
            (["config", "--image", L + ":t", "--config.label", "=x"], "config.label: must have non-empty name"),
            (["config", "--image", L + ":t", "--manifest.annotation", "x"], "manifest.annotation: must contain '='"),
            (["config", "--image", L + ":t", "--created", "yesterday"], "--created"),
            (["config", "--image", L + ":t", "--history.created", "bogus"], "--history.created"),
            (["config", "--image", L + ":t", "--clear", "bogus"], "unknown key to --clear: bogus"),
            (["config", "--image", L + ":t", "--clear", "rootfs.diffids"], "not safe"),
            (["config", "--image", L + ":t", "--no-history", "--history.author", "x"], "may not be specified together"),
            (["config", "--image", L + ":t", "--bogus"], "--bogus"),
            (["config", "--image", L + ":nope", "--author", "x"], "not found"),
            (["raw", "runtime-config", "--image", L + ":t"], "expected <config.json>"),
        ]
        for (arguments, message) in cases {
            fails(try run(ourUmoci, arguments), containing: message)
        }
        #expect(snapshot(L) == before)
    }

    @Test func corruptOrMissingBlobsAreNamed() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let image = try loadImage(L, "t")
        let configFile = blobPath(L, image.configDigest)
        let original = try #require(FileManager.default.contents(atPath: configFile))

        // Same length, different content.
        var tampered = original
        tampered[tampered.startIndex + 3] ^= 0x20
        try tampered.write(to: URL(fileURLWithPath: configFile))
        var before = snapshot(L)
        fails(try umoci("stat", "--image", L + ":t"), containing: "blob \(image.configDigest): verified reader digest mismatch")
        fails(try umoci("config", "--image", L + ":t", "--author", "x"), containing: "digest mismatch")
        #expect(snapshot(L) == before)

        // Longer than its descriptor says.
        try (original + Data([0x20])).write(to: URL(fileURLWithPath: configFile))
        fails(try umoci("stat", "--image", L + ":t"), containing: "verified reader size mismatch")

        // Gone.
        try FileManager.default.removeItem(atPath: configFile)
        before = snapshot(L)
        fails(try umoci("stat", "--image", L + ":t"), containing: "blob \(image.configDigest) is missing")
        fails(try umoci("gc", "--layout", L), containing: "is missing")
        #expect(snapshot(L) == before)

        // A malformed digest in index.json is an error, never a path.
        try Data(#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../../etc/passwd","size":1,"annotations":{"org.opencontainers.image.ref.name":"t"}}]}"#.utf8)
            .write(to: URL(fileURLWithPath: L + "/index.json"))
        fails(try umoci("stat", "--image", L + ":t"), containing: "invalid digest")
    }

    @Test func gcRemovesUnreachableBlobsAndStaleTemporaryFiles() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        ok(try umoci("config", "--image", L + ":t", "--author", "a"))
        let stray = L + "/blobs/sha256/" + String(repeating: "0", count: 64)
        _ = FileManager.default.createFile(atPath: stray, contents: Data("x".utf8))
        _ = FileManager.default.createFile(atPath: L + "/.umoci-tmp-1-dead", contents: Data())
        _ = FileManager.default.createFile(atPath: L + "/junk", contents: Data())
        #expect(try FileManager.default.contentsOfDirectory(atPath: L + "/blobs/sha256").count == 5)
        ok(try umoci("gc", "--layout", L))
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: L + "/blobs/sha256"))
        let image = try loadImage(L, "t")
        let manifestDigest = try #require(readJSON(L + "/index.json")["manifests"]?.array?.first?.object?["digest"]?.string)
        #expect(left == [String(image.configDigest.dropFirst(7)), String(manifestDigest.dropFirst(7))])
        #expect(!FileManager.default.fileExists(atPath: L + "/.umoci-tmp-1-dead"))
        #expect(FileManager.default.fileExists(atPath: L + "/junk"))
        ok(try umoci("stat", "--image", L + ":t"))
    }

    /// Concurrent edits of one layout serialize on its lock, so every one of them lands.
    @Test func concurrentConfigsAllLand() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let count = 8
        nonisolated(unsafe) let results = UnsafeMutableBufferPointer<Int32>.allocate(capacity: count)
        defer { results.deallocate() }
        DispatchQueue.concurrentPerform(iterations: count) { i in
            let out = try? run(ourUmoci, ["config", "--image", L + ":t", "--config.env", "V\(i)=\(i)"])
            results[i] = out?.status ?? -1
        }
        #expect(Array(results) == Array(repeating: 0, count: count))
        let env = try loadImage(L, "t").config["config"]?.object?["Env"]?.strings ?? []
        #expect(Set(env) == Set((0..<count).map { "V\($0)=\($0)" }))
        #expect(try loadImage(L, "t").config["history"]?.array?.count == count)
    }

    /// A tag naming an image index: the edit rewrites the manifest and the index above it.
    @Test func configThroughANestedIndex() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let layout = try ImageLayout(opening: L)
        let manifest = try layout.resolveImage(tag: "t").manifest
        var index = ImageIndex()
        var entry = manifest.withRefName(nil).json
        entry["platform"] = .object(JSONObject(["architecture": .string("amd64"), "os": .string("linux")]))
        index.setManifests([try Descriptor(json: entry)])
        let indexBlob = try layout.putJSONBlob(index.json, mediaType: MediaType.imageIndex)
        try layout.setTag("multi", to: indexBlob)

        ok(try umoci("config", "--image", L + ":multi", "--config.user", "nested"))
        let path = try layout.resolveImage(tag: "multi")
        #expect(path.walk.count == 2)
        #expect(path.root.mediaType == MediaType.imageIndex)
        #expect(path.root.digest != indexBlob.digest)
        let rewritten = try ImageIndex(json: layout.readJSONBlob(path.root), what: "index")
        #expect(rewritten.manifests.first?.json["platform"] != nil)
        #expect(try layout.loadImage(path).config.runConfig["User"] == .string("nested"))
        ok(try umoci("gc", "--layout", L))
        ok(try umoci("stat", "--image", L + ":multi"))
    }

    @Test func statMatchesDebianUmoci() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try reference("init", "--layout", L))
        ok(try reference("new", "--image", L + ":t"))
        _ = FileManager.default.createFile(atPath: dir("file"), contents: Data(repeating: 0x61, count: 5000))
        ok(try reference("insert", "--image", L + ":t", dir("file"), "/file"))
        ok(try reference("config", "--image", L + ":t", "--author", "a", "--history.comment", "a comment"))
        // 0.4.7 prints only the history table, which 0.6 prints as its HISTORY section; they
        // agree where no cell needs quoting (0.6 quotes, 0.4.7 does not). StatTests has the rest.
        let ours = ok(try umoci("stat", "--image", L + ":t"))
        let history = try #require(ours.range(of: "\n== HISTORY ==\n"))
        #expect(String(ours[history.upperBound...]) == ok(try reference("stat", "--image", L + ":t")))
        let json = try JSON.parse(ok(try umoci("stat", "--image", L + ":t", "--json")))
        let theirs = try JSON.parse(ok(try reference("stat", "--image", L + ":t", "--json")))
        #expect(json.object?["history"] == theirs.object?["history"])
        #expect(json.object?["manifest"]?.object?["descriptor"] != nil)
        #expect(json.object?["config"]?.object?["blob"]?.object?["author"] == .string("a"))
    }

    @Test func runtimeConfigMatchesDebianUmoci() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try reference("init", "--layout", L))
        ok(try reference("new", "--image", L + ":t"))
        ok(try reference("config", "--image", L + ":t", "--config.user", "alice", "--config.env", "A=1",
                         "--config.entrypoint", "/bin/sh", "--config.cmd", "-c", "--config.cmd", "echo hi",
                         "--config.workingdir", "/srv", "--config.volume", "/data", "--config.exposedports", "8080/tcp",
                         "--config.label", "org.example=1", "--author", "Someone <s@e>"))
        let rootfs = dir("rootfs")
        try FileManager.default.createDirectory(atPath: rootfs + "/etc", withIntermediateDirectories: true)
        try "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n".write(toFile: rootfs + "/etc/passwd", atomically: true, encoding: .utf8)
        try "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n".write(toFile: rootfs + "/etc/group", atomically: true, encoding: .utf8)
        ok(try umoci("raw", "runtime-config", "--image", L + ":t", "--rootfs", rootfs, dir("ours.json")))
        ok(try reference("raw", "runtime-config", "--image", L + ":t", "--rootfs", rootfs, dir("theirs.json")))
        let ours = try readJSON(dir("ours.json")), theirs = try readJSON(dir("theirs.json"))
        #expect(ours["process"] == theirs["process"])
        #expect(ours["mounts"] == theirs["mounts"])
        #expect(ours["linux"] == theirs["linux"])
        #expect(ours["root"] == theirs["root"])
    }
}
