import Foundation
import OCI
import Testing
import TestSupport

/// Positional-argument checks as strict as umoci's, with its messages: each case is run through
/// Debian's umoci and this tool, and both must fail with the same one line, leaving the layout
/// as it was.
@Suite struct ArgumentTests {
    @Test func positionalArgumentsAreCheckedLikeUmoci() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        _ = FileManager.default.createFile(atPath: dir("f"), contents: Data("f\n".utf8))
        let before = snapshot(L)
        let cases: [[String]] = [
            ["insert", "--image", L + ":t"],
            ["insert", "--image", L + ":t", dir("f")],
            ["insert", "--image", L + ":t", dir("f"), "/a", "/b"],
            ["insert", "--image", L + ":t", "", "/a"],
            ["insert", "--image", L + ":t", dir("f"), ""],
            ["insert", "--whiteout", "--image", L + ":t"],
            ["insert", "--whiteout", "--image", L + ":t", "/a", "/b"],
            ["insert", "--whiteout", "--image", L + ":t", ""],
            ["repack", "--image", L + ":t"],
            ["repack", "--image", L + ":t", dir("b1"), dir("b2")],
            ["repack", "--image", L + ":t", ""],
            ["repack", "--image", L + ":t", "--refresh-bundle"],
            ["raw", "add-layer", "--image", L + ":t"],
            ["raw", "add-layer", "--image", L + ":t", dir("a.tar"), dir("b.tar")],
            ["raw", "add-layer", "--image", L + ":t", ""],
            ["unpack", "--image", L + ":t"],
            ["unpack", "--image", L + ":t", dir("b1"), dir("b2")],
            ["unpack", "--image", L + ":t", ""],
            ["tag", "--image", L + ":t"],
            ["tag", "--image", L + ":t", "a", "b"],
            ["new", "--image", L + ":u", "x"],
            ["config", "--image", L + ":t", "x"],
            ["rm", "--image", L + ":t", "x"],
            ["stat", "--image", L + ":t", "x"],
            ["gc", "--layout", L, "x"],
            ["ls", "--layout", L, "x"],
            ["raw", "runtime-config", "--image", L + ":t"],
            ["raw", "runtime-config", "--image", L + ":t", dir("a.json"), dir("b.json")],
            ["raw", "runtime-config", "--image", L + ":t", ""],
            ["raw", "unpack", "--image", L + ":t"],
            ["raw", "unpack", "--image", L + ":t", dir("r1"), dir("r2")],
            ["raw", "unpack", "--image", L + ":t", ""],
            ["tag", "--image", L + ":t", ""],
            ["init", "--layout", dir("N"), "x"],
            ["init"],
            ["new"],
            ["insert", dir("f"), "/x"],
            ["repack", dir("b1")],
            ["gc"],
        ]
        for arguments in cases {
            let theirs = try run(debianUmoci, arguments)
            #expect(theirs.status != 0, "\(arguments)")
            fails(try run(ourUmoci, arguments), containing: theirs.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(snapshot(L) == before)
    }

    /// umoci 0.6's --version: the version line, then the specs' versions and the toolchain's.
    @Test func versionNamesTheSpecs() throws {
        for flag in ["--version", "-v"] {
            let lines = ok(try umoci(flag)).split(separator: "\n").map(String.init)
            #expect(lines.count == 4)
            #expect(lines.first?.hasPrefix("umoci version ") == true)
            #expect(lines.dropFirst().first == "image-spec: \(MediaType.imageSpecVersion)")
            #expect(lines.dropFirst(2).first == "runtime-spec: \(RuntimeSpec.version)")
            #expect(lines.last?.hasPrefix("swift: 6.") == true)
        }
        #expect(RuntimeSpec.version == "1.0.0" && MediaType.imageSpecVersion == "1.1.1")
    }
}
