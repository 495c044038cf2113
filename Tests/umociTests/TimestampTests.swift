import Foundation
import Basics
import OCI
import BundleFormat
import Testing
import TestSupport

/// Times this tool writes, as umoci 0.6 writes them: config and history `created` through Go's
/// time.MarshalJSON (RFC 3339 with nanoseconds, trailing zeros trimmed, "Z" for a zero
/// offset, other offsets kept); layer mtimes in whole seconds, truncated (umoci 0.6's tar
/// generator; 0.4.7 let archive/tar round them); SOURCE_DATE_EPOCH clamping newer mtimes in
/// repack and insert as `tar --clamp-mtime` does.
@Suite struct TimestampTests {
    /// The mtime of every entry of an uncompressed layer, by name (ustar fields; PAX headers
    /// skipped, as none of these names needs one).
    static func mtimes(_ layer: String) throws -> [String: Int64] {
        let bytes = Array(try #require(FileManager.default.contents(atPath: layer)))
        func octal(_ at: Int, _ length: Int) -> Int64 {
            var v: Int64 = 0
            for b in bytes[at..<(at + length)] where (0x30...0x37).contains(b) { v = v * 8 + Int64(b - 0x30) }
            return v
        }
        var out: [String: Int64] = [:]
        var offset = 0
        while offset + 512 <= bytes.count, bytes[offset] != 0 {
            let name = String(decoding: bytes[offset..<(offset + 100)].prefix { $0 != 0 }, as: UTF8.self)
            let size = octal(offset + 124, 12)
            if bytes[offset + 156] != UInt8(ascii: "x") { out[name] = octal(offset + 136, 12) }
            offset += 512 + Int((size + 511) / 512 * 512)
        }
        return out
    }

    static func lastLayer(_ L: String, _ tag: String) throws -> String {
        let layout = try ImageLayout(opening: L)
        return layout.blobPath(try layout.loadImage(tag: tag).manifest.layers.last!.digest)
    }

    static func touch(_ path: String, _ time: String) {
        ok(try! run("/usr/bin/touch", ["-h", "-d", "@" + time, path]))
    }

    /// The same edits through Debian's umoci and this tool store the same times (0.4.7 and 0.6
    /// both marshal through Go's time package).
    @Test func createdValuesAsGoMarshalsThem() throws {
        let dir = TemporaryDirectory()
        let cases: [(flag: String, given: String, stored: String)] = [
            ("--created", "2026-11-29T23:57:38+00:00", "2026-11-29T23:57:38Z"),
            ("--created", "2026-11-29T23:57:38.500-00:00", "2026-11-29T23:57:38.5Z"),
            ("--created", "2024-01-02T03:04:05.000000001+05:30", "2024-01-02T03:04:05.000000001+05:30"),
            ("--history.created", "2024-01-02T03:04:05.120+00:00", "2024-01-02T03:04:05.12Z"),
            ("--history.created", "2024-01-02T03:04:05-07:00", "2024-01-02T03:04:05-07:00"),
        ]
        for (i, c) in cases.enumerated() {
            var stored: [String] = []
            for (tool, name) in [(ourUmoci, "ours\(i)"), (debianUmoci, "theirs\(i)")] {
                let L = dir(name)
                ok(try run(tool, ["init", "--layout", L]))
                ok(try run(tool, ["new", "--image", L + ":t"]))
                ok(try run(tool, ["config", "--image", L + ":t", "--author", "a", c.flag, c.given]))
                let config = try loadImage(L, "t").config
                let value = c.flag == "--created" ? config["created"] : config["history"]?.array?.last?.object?["created"]
                stored.append(value?.string ?? "(none)")
            }
            #expect(stored == [c.stored, c.stored], "\(c.flag) \(c.given)")
        }
        // Defaults: now, with nanoseconds and Z.
        let L = dir("now")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let created = try #require(try loadImage(L, "t").config["created"]?.string)
        #expect(created.hasSuffix("Z") && Timestamp.normalize(created) == created)
    }

    @Test func insertTruncatesAndClampsMtimes() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let src = dir("src")
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: src + "/old", contents: Data("o".utf8))
        _ = FileManager.default.createFile(atPath: src + "/new", contents: Data("n".utf8))
        Self.touch(src + "/old", "1000.9")
        Self.touch(src + "/new", "3000000000.5")
        Self.touch(src, "1500.999999999")

        ok(try umoci("insert", "--compress", "none", "--image", L + ":t", "--tag", "plain", src, "/d"))
        #expect(try Self.mtimes(Self.lastLayer(L, "plain")) == ["d/": 1500, "d/old": 1000, "d/new": 3_000_000_000])

        ok(try umoci("insert", "--compress", "none", "--image", L + ":t", "--tag", "clamped", src, "/d",
                     environment: ["SOURCE_DATE_EPOCH": "2000000000"]))
        #expect(try Self.mtimes(Self.lastLayer(L, "clamped")) == ["d/": 1500, "d/old": 1000, "d/new": 2_000_000_000])
        #expect(try loadImage(L, "clamped").config["history"]?.array?.last?.object?["created"] == .string("2033-05-18T03:33:20Z"))
        fails(try umoci("insert", "--image", L + ":t", src, "/d", environment: ["SOURCE_DATE_EPOCH": "later"]),
              containing: "SOURCE_DATE_EPOCH")
    }

    @Test func repackClampsMtimes() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try run("/bin/cp", ["-a", fixtureLayout, L]))
        let layout = try ImageLayout(opening: L)
        let paths = BundlePaths(dir("bundle"))
        try FileManager.default.createDirectory(atPath: paths.upper, withIntermediateDirectories: true)
        try BundleMetadata(from: try layout.resolveImage(tag: "whiteouts-gzip"),
                           mount: .init(layout: L, cacheDirectory: dir("cache"), keepDirlinks: false)).write(bundle: paths.bundle)
        _ = FileManager.default.createFile(atPath: paths.upper + "/future", contents: Data("f".utf8))
        _ = FileManager.default.createFile(atPath: paths.upper + "/past", contents: Data("p".utf8))
        Self.touch(paths.upper + "/future", "3000000000.7")
        Self.touch(paths.upper + "/past", "1000.6")
        try adoptImageRootMtime(L, "whiteouts-gzip", upper: paths.upper, cache: dir("cache"))
        ok(try umoci("repack", "--compress", "none", "--image", L + ":new", paths.bundle,
                     environment: ["SOURCE_DATE_EPOCH": "2000000000"]))
        #expect(try Self.mtimes(Self.lastLayer(L, "new")) == ["future": 2_000_000_000, "past": 1000])
    }
}
