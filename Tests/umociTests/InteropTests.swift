import Foundation
import OCI
import Testing
import TestSupport

/// Layouts written by this tool are read by Debian's umoci and skopeo, and layouts they write
/// are read, edited and garbage-collected by this tool without losing anything.
@Suite struct InteropTests {
    @Test func ourLayoutIsReadByUmociAndSkopeo() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        ok(try umoci("config", "--image", L + ":t", "--config.user", "1000:1000", "--config.env", "A=1",
                     "--config.cmd", "/bin/true", "--author", "x <y@z>", "--history.comment", "c"))
        ok(try umoci("tag", "--image", L + ":t", "t2"))

        let stat = try JSON.parse(ok(try reference("stat", "--image", L + ":t", "--json")))
        #expect(stat.object?["history"]?.array?.first?.object?["comment"] == .string("c"))
        #expect(ok(try reference("ls", "--layout", L)) == "t\nt2\n")
        ok(try reference("unpack", "--image", L + ":t", dir("bundle")))
        let runtime = try readJSON(dir("bundle/config.json"))
        #expect(runtime["process"]?.object?["user"]?.object?["uid"] == .number("1000"))

        let inspect = try JSON.parse(ok(try run(skopeo, ["inspect", "oci:\(L):t"])))
        #expect(inspect.object?["Env"]?.strings == ["A=1"])
        ok(try run(skopeo, ["copy", "oci:\(L):t", "oci:\(dir("copy")):t"]))
        ok(try run(skopeo, ["inspect", "--config", "oci:\(dir("copy")):t"]))
        // And the layout is still ours to read after umoci's and skopeo's visits.
        ok(try umoci("stat", "--image", dir("copy") + ":t"))
    }

    @Test func umocisLayoutIsReadEditedAndCollectedByUs() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try reference("init", "--layout", L))
        ok(try reference("new", "--image", L + ":base"))
        _ = FileManager.default.createFile(atPath: dir("hello"), contents: Data("hello\n".utf8))
        ok(try reference("insert", "--image", L + ":base", dir("hello"), "/hello"))
        ok(try reference("unpack", "--image", L + ":base", dir("bundle")))
        try "changed\n".write(toFile: dir("bundle/rootfs/changed"), atomically: true, encoding: .utf8)
        ok(try reference("repack", "--image", L + ":base", dir("bundle")))
        ok(try reference("new", "--image", L + ":unused"))

        // Read.
        let history = try JSON.parse(ok(try umoci("stat", "--image", L + ":base", "--json")))
        #expect(history.object?["history"]?.array?.map { $0.object?["created_by"]?.string } == ["umoci insert", "umoci repack"])
        // Tag, edit, remove a tag, collect.
        ok(try umoci("tag", "--image", L + ":base", "mine"))
        ok(try umoci("config", "--image", L + ":mine", "--config.env", "EDITED=1", "--history.comment", "ours"))
        ok(try umoci("rm", "--image", L + ":unused"))
        ok(try umoci("gc", "--layout", L))

        // Nothing that is still tagged was lost: umoci unpacks both images, skopeo verifies every blob.
        ok(try reference("unpack", "--image", L + ":mine", dir("mine")))
        #expect(try String(contentsOfFile: dir("mine/rootfs/hello"), encoding: .utf8) == "hello\n")
        #expect(try String(contentsOfFile: dir("mine/rootfs/changed"), encoding: .utf8) == "changed\n")
        ok(try reference("unpack", "--image", L + ":base", dir("base")))
        ok(try run(skopeo, ["copy", "oci:\(L):mine", "oci:\(dir("copy")):mine"]))
        ok(try run(skopeo, ["copy", "oci:\(L):base", "oci:\(dir("copy")):base"]))
        #expect(ok(try reference("ls", "--layout", L)) == "base\nmine\n")
        let stat = try JSON.parse(ok(try reference("stat", "--image", L + ":mine", "--json")))
        #expect(stat.object?["history"]?.array?.last?.object?["comment"] == .string("ours"))
        // umoci's gc finds nothing of ours to remove: we left no unreachable blob behind.
        let blobs = try FileManager.default.contentsOfDirectory(atPath: L + "/blobs/sha256").count
        ok(try reference("gc", "--layout", L))
        #expect(try FileManager.default.contentsOfDirectory(atPath: L + "/blobs/sha256").count == blobs)
    }
}
