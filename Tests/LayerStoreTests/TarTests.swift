import Foundation
import Testing
@testable import Basics
@testable import Archive

// MARK: - Helpers

private func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
    (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

/// An archive of `items` (data only for regular files), with or without end-of-archive blocks.
private func makeArchive(_ items: [(TarEntry, [UInt8])], keepSubsecond: Bool = false, end: Bool = true) throws -> [UInt8] {
    var out: [UInt8] = []
    for (entry, data) in items {
        out += try TarWriter.header(for: entry, keepSubsecondMtime: keepSubsecond)
        if entry.type == .regular {
            out += data
            out += [UInt8](repeating: 0, count: TarWriter.padding(forSize: Int64(data.count)))
        }
    }
    if end { out += TarWriter.endOfArchive }
    return out
}

/// Scans `bytes` fed in chunks of `chunk` bytes, draining entries after every chunk.
private func scanChunked(_ bytes: [UInt8], chunk: Int) throws(TarError) -> [ScannedEntry] {
    var scanner = TarScanner()
    var out: [ScannedEntry] = []
    var i = 0
    while i < bytes.count {
        let j = min(bytes.count, i + chunk)
        var failure: TarError?
        bytes[i ..< j].withUnsafeBytes { raw in
            do throws(TarError) { try scanner.consume(raw) } catch { failure = error }
        }
        if let failure { throw failure }
        out += scanner.takeEntries()
        i = j
    }
    try scanner.finish()
    out += scanner.takeEntries()
    #expect(scanner.bytesConsumed == Int64(bytes.count))
    return out
}

private func scanError(_ bytes: [UInt8]) -> TarError? {
    do {
        _ = try TarScanner.scan(bytes)
        return nil
    } catch {
        return error
    }
}

/// A raw ustar header block with a valid checksum; `edit` may change any byte before the sum.
private func rawHeader(name: String, flag: UInt8, size: Int64 = 0, magic: String = "ustar\u{0}00",
                       edit: (inout [UInt8]) -> Void = { _ in }) -> [UInt8] {
    var b = [UInt8](repeating: 0, count: 512)
    for (k, c) in name.utf8.enumerated() { b[k] = c }
    TarWriter.formatOctal(&b, 100 ..< 108, 0o644)
    TarWriter.formatOctal(&b, 108 ..< 116, 0)
    TarWriter.formatOctal(&b, 116 ..< 124, 0)
    TarWriter.formatOctal(&b, 124 ..< 136, size)
    TarWriter.formatOctal(&b, 136 ..< 148, 1_600_000_000)
    b[156] = flag
    for (k, c) in magic.utf8.enumerated() { b[257 + k] = c }
    edit(&b)
    setChecksum(&b)
    return b
}

private func setChecksum(_ b: inout [UInt8]) {
    for k in 148 ..< 156 { b[k] = 0x20 }
    let sum = b.reduce(0) { $0 + Int64($1) }
    TarWriter.formatOctal(&b, 148 ..< 155, sum)
    b[155] = 0x20
}

private func paxBody(_ records: [(String, [UInt8])]) -> [UInt8] {
    var out: [UInt8] = []
    for (k, v) in records { TarWriter.appendPAXRecord(&out, key: Array(k.utf8), value: v) }
    return out
}

private func padded(_ data: [UInt8]) -> [UInt8] {
    data + [UInt8](repeating: 0, count: TarWriter.padding(forSize: Int64(data.count)))
}

@discardableResult
private func shell(_ command: String) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", command]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

private func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "tartests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

private func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

private func isRoot() -> Bool { getuid() == 0 }

// MARK: - Round trips

@Suite struct TarRoundTripTests {
    static func everyType() -> [(TarEntry, [UInt8])] {
        var dir = TarEntry(name: "etc/", type: .directory, mode: 0o755, mtime: 1_600_000_000)
        dir.uname = ""
        var file = TarEntry(name: "etc/passwd", type: .regular, mode: 0o644, uid: 1, gid: 2, size: 1000, mtime: 1_600_000_001)
        file.uname = "user"
        file.gname = "group"
        var hard = TarEntry(name: "etc/passwd-", type: .hardlink, mode: 0o644)
        hard.linkName = "etc/passwd"
        var sym = TarEntry(name: "etc/localtime", type: .symlink, mode: 0o777)
        sym.linkName = "/usr/share/zoneinfo/UTC"
        var chr = TarEntry(name: "dev/null", type: .characterDevice, mode: 0o666)
        chr.devMajor = 1
        chr.devMinor = 3
        var blk = TarEntry(name: "dev/loop7", type: .blockDevice, mode: 0o660, gid: 6)
        blk.devMajor = 7
        blk.devMinor = 1_048_575
        let fifo = TarEntry(name: "run/fifo", type: .fifo, mode: 0o600)
        let suid = TarEntry(name: "usr/bin/su", type: .regular, mode: 0o4755, size: 512)
        let empty = TarEntry(name: ".wh..wh..opq", type: .regular, mode: 0)
        return [(dir, []), (file, pattern(1000)), (hard, []), (sym, []), (chr, []), (blk, []), (fifo, []),
                (suid, pattern(512, seed: 9)), (empty, [])]
    }

    @Test func everyTypeRoundTripsAndOffsetsAreRight() throws {
        let items = Self.everyType()
        let archive = try makeArchive(items)
        for entry in items.map(\.0) {
            #expect(try TarWriter.header(for: entry).count == 512, "plain ustar for \(entry.name)")
        }
        let scanned = try TarScanner.scan(archive)
        #expect(scanned.map(\.entry) == items.map(\.0))
        // Offsets: every entry's data lies where its bytes are.
        for (s, (_, data)) in zip(scanned, items) {
            #expect(s.dataOffset == s.headerOffset + 512)
            let start = Int(s.dataOffset)
            #expect(Array(archive[start ..< start + data.count]) == data)
        }
    }

    @Test(arguments: [1, 7, 100, 511, 512, 513, 1000, 4096, 1 << 20])
    func chunkingDoesNotMatter(chunk: Int) throws {
        var items = Self.everyType()
        var long = TarEntry(name: ByteString(String(repeating: "x/", count: 100) + "file"), type: .regular, uid: 3_000_000, size: 3)
        long.xattrs = [Xattr(name: "user.a", value: [1, 2, 3])]
        items.append((long, [7, 8, 9]))
        let archive = try makeArchive(items)
        let whole = try TarScanner.scan(archive)
        let chunked = try scanChunked(archive, chunk: chunk)
        #expect(chunked.map(\.entry) == whole.map(\.entry))
        #expect(chunked.map(\.headerOffset) == whole.map(\.headerOffset))
        #expect(chunked.map(\.dataOffset) == whole.map(\.dataOffset))
        #expect(whole.map(\.entry) == items.map(\.0))
    }

    @Test func nameOf150BytesSplitsIntoPrefixWithoutPAX() throws {
        let name = String(repeating: "d", count: 60) + "/" + String(repeating: "e", count: 60) + "/" + String(repeating: "f", count: 28)
        #expect(name.utf8.count == 150)
        let entry = TarEntry(name: ByteString(name), type: .regular, size: 0)
        let header = try TarWriter.header(for: entry)
        #expect(header.count == 512)
        #expect(header[345 ..< 345 + 121] == ArraySlice((String(repeating: "d", count: 60) + "/" + String(repeating: "e", count: 60)).utf8))
        #expect(try TarScanner.scan(header + TarWriter.endOfArchive).map(\.entry) == [entry])
    }

    @Test func longNamesAndLinksUsePAX() throws {
        let name300 = (0 ..< 30).map { _ in "abcdefghi" }.joined(separator: "/") + "/z"
        #expect(name300.utf8.count > 255)
        let unsplittable = String(repeating: "n", count: 120)
        var link = TarEntry(name: "short", type: .symlink)
        link.linkName = ByteString(String(repeating: "t", count: 150))
        var hard = TarEntry(name: ByteString(unsplittable), type: .hardlink)
        hard.linkName = ByteString(name300)
        let dirWithSlash = TarEntry(name: ByteString(String(repeating: "q", count: 101) + "/"), type: .directory, mode: 0o755)
        let items: [(TarEntry, [UInt8])] = [
            (TarEntry(name: ByteString(name300), type: .regular, size: 5), [1, 2, 3, 4, 5]),
            (TarEntry(name: ByteString(unsplittable), type: .regular), []),
            (link, []), (hard, []), (dirWithSlash, []),
        ]
        for (entry, _) in items {
            #expect(try TarWriter.header(for: entry).count == 1536, "PAX header for \(entry.name)")
        }
        #expect(try TarScanner.scan(makeArchive(items)).map(\.entry) == items.map(\.0))
    }

    @Test func nonASCIIStringsUsePAX() throws {
        var entry = TarEntry(name: "usr/share/ünïcødé/文件.txt", type: .regular, size: 2)
        entry.uname = "jösé"
        entry.gname = "ßtaff"
        var sym = TarEntry(name: "link", type: .symlink)
        sym.linkName = "→target"
        let items: [(TarEntry, [UInt8])] = [(entry, [0x41, 0x42]), (sym, [])]
        let archive = try makeArchive(items)
        #expect(try TarScanner.scan(archive).map(\.entry) == items.map(\.0))
        let header = try TarWriter.header(for: entry)
        let body = String(decoding: header[512 ..< 1024], as: UTF8.self)
        #expect(body.contains("path=usr/share/ünïcødé/文件.txt\n"))
        // Go's toASCII for the ustar fallback fields.
        let main = Array(header[1024 ..< 1536])
        #expect(main.withUnsafeBytes { TarScanner.cString($0, 0 ..< 100) } == "usr/share/ncd/.txt")
        #expect(main.withUnsafeBytes { TarScanner.cString($0, 265 ..< 297) } == "js")
    }

    @Test func bigNumbersUsePAX() throws {
        let uid = TarEntry(name: "uid", type: .regular, uid: 3_000_000, gid: 2_097_151)
        let gid = TarEntry(name: "gid", type: .directory, uid: 2_097_151, gid: 4_000_000_000)
        let negative = TarEntry(name: "neg", type: .regular, uid: -2)
        let oldTime = TarEntry(name: "old", type: .regular, mtime: -1_000)
        let farTime = TarEntry(name: "far", type: .regular, mtime: 0o77777777777 + 1)
        let maxTime = TarEntry(name: "max", type: .regular, mtime: 0o77777777777)
        var longUname = TarEntry(name: "names", type: .regular)
        longUname.uname = String(repeating: "u", count: 33)
        longUname.gname = String(repeating: "g", count: 32)
        let items: [(TarEntry, [UInt8])] = [(uid, []), (gid, []), (negative, []), (oldTime, []), (farTime, []),
                                            (maxTime, []), (longUname, [])]
        let sizes = try items.map { try TarWriter.header(for: $0.0).count }
        #expect(sizes == [1536, 1536, 1536, 1536, 1536, 512, 1536])
        #expect(try TarScanner.scan(makeArchive(items)).map(\.entry) == items.map(\.0))

        let header = try TarWriter.header(for: uid)
        #expect(String(decoding: header[512 ..< 1024], as: UTF8.self).hasPrefix("15 uid=3000000\n\0"))
        // The ustar field holds 0 when the value went to PAX, as Go writes it.
        #expect(Array(header[1024 + 108 ..< 1024 + 116]) == Array("0000000\0".utf8))
        #expect(Array(header[1024 + 116 ..< 1024 + 124]) == Array("7777777\0".utf8))
    }

    @Test func hugeSizeUsesPAXSize() throws {
        let size: Int64 = 10 << 30  // 10 GiB > 0o77777777777
        let entry = TarEntry(name: "big.img", type: .regular, size: size)
        let header = try TarWriter.header(for: entry)
        #expect(header.count == 1536)
        #expect(String(decoding: header[512 ..< 1024], as: UTF8.self).hasPrefix("20 size=10737418240\n"))
        var scanner = TarScanner()
        header.withUnsafeBytes { raw in
            do throws(TarError) { try scanner.consume(raw) } catch { Issue.record("\(error)") }
        }
        let entries = scanner.takeEntries()
        #expect(entries.map(\.entry) == [entry])
        #expect(entries.first?.headerOffset == 0)
        #expect(entries.first?.dataOffset == 1536)
        // Feed the data without materialising it: one zero chunk, reused.
        let chunk = [UInt8](repeating: 0, count: 1 << 20)
        var remaining = size
        while remaining > 0 {
            let n = Int(min(remaining, Int64(chunk.count)))
            chunk.withUnsafeBytes { raw in
                do throws(TarError) { try scanner.consume(UnsafeRawBufferPointer(rebasing: raw[0 ..< n])) } catch {
                    Issue.record("\(error)")
                }
            }
            remaining -= Int64(n)
        }
        #expect(throws: Never.self) { try scanner.finish() }
        #expect(scanner.bytesConsumed == 1536 + size)
    }

    @Test func mtimeRoundingAndSubseconds() throws {
        var a = TarEntry(name: "a", type: .regular, mtime: 1_600_000_000)
        a.mtimeNanoseconds = 499_999_999
        var b = a
        b.mtimeNanoseconds = 500_000_000
        // Format unspecified: Go rounds to the nearest second, plain ustar.
        let ha = try TarWriter.header(for: a), hb = try TarWriter.header(for: b)
        #expect(ha.count == 512 && hb.count == 512)
        #expect(try TarScanner.scan(ha + TarWriter.endOfArchive).first?.entry.mtime == 1_600_000_000)
        #expect(try TarScanner.scan(hb + TarWriter.endOfArchive).first?.entry.mtime == 1_600_000_001)
        // keepSubsecondMtime: PAX mtime with trailing zeros trimmed.
        let hk = try TarWriter.header(for: b, keepSubsecondMtime: true)
        #expect(hk.count == 1536)
        #expect(String(decoding: hk[512 ..< 1024], as: UTF8.self).hasPrefix("22 mtime=1600000000.5\n"))
        #expect(try TarScanner.scan(hk + TarWriter.endOfArchive).first?.entry == b)
        // Whole seconds stay ustar even with keepSubsecondMtime.
        #expect(try TarWriter.header(for: TarEntry(name: "w", type: .regular, mtime: 5), keepSubsecondMtime: true).count == 512)
        // Negative time with fraction: Go's formatPAXTime / parsePAXTime.
        var n = TarEntry(name: "n", type: .regular, mtime: -2)
        n.mtimeNanoseconds = 250_000_000  // -1.75 s
        let hn = try TarWriter.header(for: n, keepSubsecondMtime: true)
        #expect(String(decoding: hn[512 ..< 1024], as: UTF8.self).hasPrefix("15 mtime=-1.75\n"))
        #expect(try TarScanner.scan(hn + TarWriter.endOfArchive).first?.entry == n)
    }

    @Test func xattrsRoundTripAsSortedPAXRecords() throws {
        var entry = TarEntry(name: "bin/ping", type: .regular, mode: 0o755, size: 4)
        entry.xattrs = [
            Xattr(name: "user.z", value: Array("last".utf8)),
            Xattr(name: "security.capability", value: [1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Xattr(name: "user.binary", value: [0, 0xff, 0x0a, 0x3d, 0x80]),
            Xattr(name: "user.ünï", value: Array("é".utf8)),
        ]
        let header = try TarWriter.header(for: entry)
        #expect(header.count == 1536)
        // Records are sorted by key; the record length counts bytes.
        let body = Array(header[512 ..< 1024])
        let text = String(decoding: body, as: UTF8.self)
        let cap = text.range(of: "security.capability")!, bin = text.range(of: "user.binary")!
        let z = text.range(of: "user.z")!, u = text.range(of: "user.ünï")!
        #expect(cap.lowerBound < bin.lowerBound && bin.lowerBound < z.lowerBound && z.lowerBound < u.lowerBound)
        #expect(text.hasPrefix("57 SCHILY.xattr.security.capability="))
        // PAX header name and fields, as Go writes them.
        #expect(header.withUnsafeBytes { TarScanner.cString($0, 0 ..< 100) } == "bin/PaxHeaders.0/ping")
        #expect(header[156] == UInt8(ascii: "x"))
        #expect(Array(header[100 ..< 108]) == Array("0000000\0".utf8))
        #expect(Array(header[257 ..< 265]) == Array("ustar\u{0}00".utf8))

        let scanned = try TarScanner.scan(makeArchive([(entry, [1, 2, 3, 4])]))
        var sorted = entry  // archive order is the writer's sorted order
        sorted.xattrs.sort { $0.name < $1.name }
        #expect(scanned.map(\.entry) == [sorted])
        #expect(scanned.first?.headerOffset == 0)
        #expect(scanned.first?.dataOffset == 1536)
    }

    @Test func paxHeaderNamesFollowGo() {
        func name(_ s: String) -> String { String(decoding: TarWriter.paxHeaderName(Array(s.utf8)), as: UTF8.self) }
        #expect(name("a/b/c") == "a/b/PaxHeaders.0/c")
        #expect(name("file") == "PaxHeaders.0/file")
        #expect(name("dir/") == "dir/PaxHeaders.0")
        #expect(name("./x//y") == "x/PaxHeaders.0/y")
        #expect(name("/abs") == "/PaxHeaders.0/abs")
    }

    @Test func headerIsDeterministicAndChecksumValid() throws {
        var entry = TarEntry(name: ByteString(String(repeating: "p", count: 200)), type: .regular, uid: 5_000_000, size: 1)
        entry.xattrs = [Xattr(name: "user.b", value: [2]), Xattr(name: "user.a", value: [1])]
        let one = try TarWriter.header(for: entry)
        let two = try TarWriter.header(for: entry)
        #expect(one == two)
        #expect(one.count == 1536)
        for start in [0, one.count - 512] {
            var blk = Array(one[start ..< start + 512])
            let stored = Array(blk[148 ..< 156])
            setChecksum(&blk)
            #expect(Array(blk[148 ..< 156]) == stored)
            #expect(stored[6] == 0 && stored[7] == 0x20)
        }
    }

    @Test func writerRejectsWhatGoRejects() {
        #expect(throws: TarError.self) { try TarWriter.header(for: TarEntry(name: "file/", type: .regular)) }
        #expect(throws: TarError.self) { try TarWriter.header(for: TarEntry(name: "f", type: .regular, size: -1)) }
        var bad = TarEntry(name: "f", type: .regular)
        bad.xattrs = [Xattr(name: "user.a=b", value: [1])]
        #expect(throws: TarError.self) { try TarWriter.header(for: bad) }
    }

    @Test func paddingAndEndOfArchive() {
        #expect(TarWriter.padding(forSize: 0) == 0)
        #expect(TarWriter.padding(forSize: 1) == 511)
        #expect(TarWriter.padding(forSize: 512) == 0)
        #expect(TarWriter.padding(forSize: 513) == 511)
        #expect(TarWriter.endOfArchive == [UInt8](repeating: 0, count: 1024))
    }
}

// MARK: - Reader edge cases

@Suite struct TarScannerTests {
    @Test func truncatedDataReportsTheEntryHeader() throws {
        let items: [(TarEntry, [UInt8])] = [
            (TarEntry(name: "a", type: .regular, size: 10), pattern(10)),
            (TarEntry(name: "b", type: .regular, size: 2000), pattern(2000)),
        ]
        let archive = try makeArchive(items)
        let cut = Array(archive[0 ..< 1024 + 512 + 100])
        let error = scanError(cut)
        #expect(error?.offset == 1024)
        #expect(error?.description.hasSuffix("at byte offset 1024") == true)
        // The entries before the cut were still reported while consuming.
        var scanner = TarScanner()
        try cut.withUnsafeBytes { raw in try scanner.consume(raw) }
        #expect(scanner.takeEntries().map(\.entry.name) == ["a", "b"])
        #expect(throws: TarError.self) { try scanner.finish() }
    }

    @Test func truncatedHeaderReportsItsOffset() throws {
        let archive = try makeArchive([(TarEntry(name: "a", type: .regular, size: 10), pattern(10)),
                                       (TarEntry(name: "b", type: .regular), [])])
        #expect(scanError(Array(archive[0 ..< 1024 + 300]))?.offset == 1024)
        // Inside a PAX body.
        var long = TarEntry(name: ByteString(String(repeating: "l", count: 300)), type: .regular)
        long.uid = 1
        let pax = try makeArchive([(long, [])])
        #expect(scanError(Array(pax[0 ..< 600]))?.offset == 0)
        // An extended header with no entry after it.
        #expect(scanError(Array(pax[0 ..< 1024]))?.offset == 0)
    }

    @Test func badChecksumIsAnError() throws {
        var archive = try makeArchive([(TarEntry(name: "a", type: .regular, size: 3), [1, 2, 3]),
                                       (TarEntry(name: "b", type: .regular), [])])
        archive[1024 + 5] ^= 0x01
        let error = scanError(archive)
        #expect(error?.offset == 1024)
        #expect(error?.reason.contains("checksum") == true)
    }

    @Test func signedChecksumIsAccepted() throws {
        var blk = rawHeader(name: "caf\u{e9}", flag: UInt8(ascii: "0"))  // é encodes as 0xC3 0xA9
        // Replace the checksum with the signed sum.
        for k in 148 ..< 156 { blk[k] = 0x20 }
        let signed = blk.reduce(0) { $0 + Int64(Int8(bitPattern: $1)) }
        TarWriter.formatOctal(&blk, 148 ..< 155, signed)
        blk[155] = 0x20
        #expect(try TarScanner.scan(blk + TarWriter.endOfArchive).map(\.entry.name) == ["café"])
    }

    @Test func garbageAfterEndOfArchiveIsIgnored() throws {
        let archive = try makeArchive([(TarEntry(name: "a", type: .regular, size: 3), [1, 2, 3])])
        let withGarbage = archive + Array("this is not a tar header at all".utf8) + pattern(5000)
        var scanner = TarScanner()
        try withGarbage.withUnsafeBytes { raw in try scanner.consume(raw) }
        #expect(scanner.reachedEndOfArchive)
        #expect(scanner.bytesConsumed == Int64(withGarbage.count))
        try scanner.finish()
        #expect(scanner.takeEntries().map(\.entry.name) == ["a"])
    }

    @Test func endWithoutEndBlocksOrPaddingIsAccepted() throws {
        // umoci 0.4.7 `insert` (Debian): header + data, no final padding, no end-of-archive blocks.
        let first = try TarWriter.header(for: TarEntry(name: "a", type: .regular, size: 3)) + padded([1, 2, 3])
        let last = try TarWriter.header(for: TarEntry(name: "etc/motd", type: .regular, size: 700)) + pattern(700)
        let scanned = try scanChunked(first + last, chunk: 333)
        #expect(scanned.map(\.entry.name) == ["a", "etc/motd"])
        // Ending inside the padding, and at a header boundary, are fine too.
        #expect(try TarScanner.scan(first + last + [0, 0, 0]).count == 2)
        #expect(try TarScanner.scan(first).count == 1)
        #expect(try TarScanner.scan([]).isEmpty)
        // One zero block then end of input.
        var scanner = TarScanner()
        try (first + [UInt8](repeating: 0, count: 512)).withUnsafeBytes { try scanner.consume($0) }
        #expect(scanner.reachedEndOfArchive)
        try scanner.finish()
        // But not one byte short of the data.
        #expect(scanError(first + last.dropLast())?.offset == 1024)
    }

    @Test func zeroBlockFollowedByHeaderIsAnError() throws {
        let a = try TarWriter.header(for: TarEntry(name: "a", type: .regular))
        #expect(scanError(a + [UInt8](repeating: 0, count: 512) + a)?.offset == 1024)
    }

    @Test func base256AndSloppyOctalFields() throws {
        let blk = rawHeader(name: "weird", flag: UInt8(ascii: "0"), size: 0) { b in
            // uid 3000000 in base-256, gid as space-padded octal, mtime negative base-256,
            // mode with leading spaces and a trailing space + NUL, size with leading NULs.
            var uid = [UInt8](repeating: 0, count: 8)
            var x: Int64 = 3_000_000
            for k in (0 ..< 8).reversed() { uid[k] = UInt8(truncatingIfNeeded: x); x >>= 8 }
            uid[0] |= 0x80
            b.replaceSubrange(108 ..< 116, with: uid)
            b.replaceSubrange(116 ..< 124, with: Array("    12 \0".utf8))
            b.replaceSubrange(136 ..< 148, with: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x9c])
            b.replaceSubrange(100 ..< 108, with: Array("  4755 \0".utf8))
            b.replaceSubrange(124 ..< 136, with: Array("\0\0\0\0\0\0\0\0\0\0\0\0".utf8))
        }
        let e = try #require(try TarScanner.scan(blk + TarWriter.endOfArchive).first).entry
        #expect(e.uid == 3_000_000)
        #expect(e.gid == 0o12)
        #expect(e.mtime == -100)
        #expect(e.mode == 0o4755)
        #expect(e.size == 0)
    }

    @Test func modeKeepsOnlyPermissionBits() throws {
        let blk = rawHeader(name: "m", flag: UInt8(ascii: "0")) { b in
            TarWriter.formatOctal(&b, 100 ..< 108, 0o100755)
        }
        #expect(try TarScanner.scan(blk).first?.entry.mode == 0o755)
    }

    @Test func invalidNumericFieldIsAnError() {
        let blk = rawHeader(name: "bad", flag: UInt8(ascii: "0")) { b in
            b.replaceSubrange(108 ..< 116, with: Array("00x0000\0".utf8))
        }
        #expect(scanError(blk)?.reason.contains("uid") == true)
    }

    @Test func impossibleSizesAreErrors() {
        let negative = rawHeader(name: "neg", flag: UInt8(ascii: "0")) { b in
            b.replaceSubrange(124 ..< 136, with: [UInt8](repeating: 0xff, count: 12))  // base-256 -1
        }
        #expect(scanError(negative)?.reason.contains("negative") == true)
        let huge = rawHeader(name: "huge", flag: UInt8(ascii: "0")) { b in
            var f = [UInt8](repeating: 0, count: 12)
            f[0] = 0x80
            f[4] = 0x40  // byte 4 of 12 carries bits 56...63: 2^62
            f[11] = 1    // 2^62 + 1
            b.replaceSubrange(124 ..< 136, with: f)
        }
        #expect(scanError(huge)?.reason.contains("impossible") == true)
        // PAX size that is negative.
        let body = paxBody([("size", Array("-5".utf8))])
        let pax = rawHeader(name: "PaxHeaders.0/x", flag: UInt8(ascii: "x"), size: Int64(body.count)) + padded(body)
        #expect(scanError(pax + rawHeader(name: "x", flag: UInt8(ascii: "0")))?.offset == 1024)
    }

    @Test(arguments: [
        "5 a=\n",               // valid: key "a", empty value (ignored)
        "7 path\n",             // no '='
        "10 path=x",            // length beyond the data
        "x path=a\n",           // non-numeric length
        "7 path=ab",            // wrong length
        "11 uid=abc\n",         // bad number
        "13 mtime=1.x\n",       // bad fraction
        "4 =\n",               // shorter than the minimum
        "9 =value\n",           // empty key
        "12 path=a\0b\n",       // NUL in a path
    ])
    func malformedPAXRecords(_ body: String) throws {
        let data = Array(body.utf8)
        let archive = rawHeader(name: "PaxHeaders.0/x", flag: UInt8(ascii: "x"), size: Int64(data.count)) + padded(data)
            + rawHeader(name: "x", flag: UInt8(ascii: "0")) + TarWriter.endOfArchive
        if body == "5 a=\n" {
            #expect(try TarScanner.scan(archive).map(\.entry.name) == ["x"])
        } else {
            let error = scanError(archive)
            #expect(error?.offset == 0, "\(body.debugDescription): \(String(describing: error))")
        }
    }

    @Test func paxRecordsApplyAndUnknownOnesAreIgnored() throws {
        let body = paxBody([
            ("atime", Array("1.5".utf8)), ("ctime", Array("bogus".utf8)), ("comment", Array("hi".utf8)),
            ("path", Array("from/pax".utf8)), ("linkpath", Array("target".utf8)), ("uid", Array("70000000".utf8)),
            ("gid", Array("-3".utf8)), ("uname", Array("ü".utf8)), ("gname", []), ("mtime", Array("1700000000.1234567899".utf8)),
            ("SCHILY.xattr.user.nl", [0x0a, 0x00, 0x3d]), ("SCHILY.xattr.user.empty", []),
            ("LIBARCHIVE.xattr.user.nl", Array("Cg".utf8)), ("size", Array("0".utf8)),
        ])
        let main = rawHeader(name: "short", flag: UInt8(ascii: "1"), size: 0) { b in
            for (k, c) in "grp".utf8.enumerated() { b[297 + k] = c }
        }
        let archive = rawHeader(name: "PaxHeaders.0/short", flag: UInt8(ascii: "x"), size: Int64(body.count))
            + padded(body) + main + TarWriter.endOfArchive
        let scanned = try TarScanner.scan(archive)
        let e = try #require(scanned.first).entry
        #expect(e.name == "from/pax")
        #expect(e.type == .hardlink)
        #expect(e.linkName == "target")
        #expect(e.uid == 70_000_000)
        #expect(e.gid == -3)
        #expect(e.uname == "ü")
        #expect(e.gname == "grp")  // empty PAX value keeps the header's
        #expect(e.mtime == 1_700_000_000 && e.mtimeNanoseconds == 123_456_789)
        #expect(e.xattrs == [Xattr(name: "user.nl", value: [0x0a, 0x00, 0x3d])])
        #expect(scanned.first?.headerOffset == 0)
        #expect(scanned.first?.dataOffset == Int64(512 + padded(body).count + 512))
    }

    @Test func laterPAXHeaderReplacesEarlierAndGNULongNameWins() throws {
        let first = paxBody([("path", Array("first".utf8)), ("uid", Array("9".utf8))])
        let second = paxBody([("path", Array("second".utf8))])
        let longName = Array("gnu/long/name".utf8) + [0]
        let archive = rawHeader(name: "P/1", flag: UInt8(ascii: "x"), size: Int64(first.count)) + padded(first)
            + rawHeader(name: "P/2", flag: UInt8(ascii: "x"), size: Int64(second.count)) + padded(second)
            + rawHeader(name: "././@LongLink", flag: UInt8(ascii: "L"), size: Int64(longName.count), magic: "ustar  \0")
            + padded(longName)
            + rawHeader(name: "trunc", flag: UInt8(ascii: "0"), magic: "ustar  \0")
            + TarWriter.endOfArchive
        let e = try #require(try TarScanner.scan(archive).first).entry
        #expect(e.name == "gnu/long/name")
        #expect(e.uid == 0)
    }

    @Test func typeflagsNulSevenAndGlobal() throws {
        let globalBody = paxBody([("comment", Array("global".utf8))])
        let archive = rawHeader(name: "g", flag: UInt8(ascii: "g"), size: Int64(globalBody.count)) + padded(globalBody)
            + rawHeader(name: "olddir/", flag: 0, magic: "\0\0\0\0\0\0\0\0")
            + rawHeader(name: "oldfile", flag: 0, size: 3, magic: "\0\0\0\0\0\0\0\0") + padded([1, 2, 3])
            + rawHeader(name: "contig", flag: UInt8(ascii: "7"), size: 1) + padded([9])
            + rawHeader(name: "after", flag: UInt8(ascii: "5"))
            + TarWriter.endOfArchive
        let scanned = try TarScanner.scan(archive)
        #expect(scanned.map(\.entry.name) == ["olddir/", "oldfile", "contig", "after"])
        #expect(scanned.map(\.entry.type) == [.directory, .regular, .regular, .directory])
        #expect(scanned.map(\.entry.size) == [0, 3, 1, 0])
    }

    /// Vendor typeflags are refused, as umoci refuses them ("unknown typeflag"), not skipped:
    /// a layer whose entries this tool cannot extract must not unpack as if they were absent.
    @Test(arguments: [UInt8(ascii: "S"), UInt8(ascii: "M"), UInt8(ascii: "V"), UInt8(ascii: "D"), UInt8(ascii: "A")])
    func unsupportedTypeflagsAreErrors(_ flag: UInt8) throws {
        let ok = try TarWriter.header(for: TarEntry(name: "ok", type: .regular))
        let archive = ok + rawHeader(name: "bad", flag: flag, size: 700, magic: "ustar  \0") + padded(pattern(700)) + TarWriter.endOfArchive
        let error = scanError(archive)
        #expect(error?.offset == 512)
        if flag == UInt8(ascii: "D") || flag == UInt8(ascii: "A") {
            #expect(error?.reason == "unpack entry: bad: unknown typeflag '\\x\(String(flag, radix: 16))'")
        }
    }

    @Test func paxSparseIsAnError() throws {
        let body = paxBody([("GNU.sparse.major", Array("1".utf8)), ("GNU.sparse.minor", Array("0".utf8))])
        let archive = rawHeader(name: "P", flag: UInt8(ascii: "x"), size: Int64(body.count)) + padded(body)
            + rawHeader(name: "GNUSparseFile.0/f", flag: UInt8(ascii: "0")) + TarWriter.endOfArchive
        #expect(scanError(archive)?.offset == 0)
    }

    @Test func headerOnlyTypesHaveNoDataEvenWithASizeField() throws {
        // Go's reader (and so umoci) treats link/symlink/device/dir/fifo as having no data.
        let archive = rawHeader(name: "hl", flag: UInt8(ascii: "1"), size: 600) { b in
            for (k, c) in "target".utf8.enumerated() { b[157 + k] = c }
        } + rawHeader(name: "next", flag: UInt8(ascii: "0"), size: 2) + padded([1, 2]) + TarWriter.endOfArchive
        let scanned = try TarScanner.scan(archive)
        #expect(scanned.map(\.entry.name) == ["hl", "next"])
        #expect(scanned.map(\.entry.size) == [0, 2])
        #expect(scanned[0].entry.linkName == "target")
    }

    @Test func ustarPrefixAndGNUMagic() throws {
        let ustar = rawHeader(name: "name", flag: UInt8(ascii: "0")) { b in
            for (k, c) in "the/prefix".utf8.enumerated() { b[345 + k] = c }
        }
        // The GNU format has no prefix field (bytes 345... are atime/ctime).
        let gnu = rawHeader(name: "gname", flag: UInt8(ascii: "0"), magic: "ustar  \0")
        let scanned = try TarScanner.scan(ustar + gnu + TarWriter.endOfArchive)
        #expect(scanned.map(\.entry.name) == ["the/prefix/name", "gname"])
    }
}

// MARK: - GNU tar interoperability

@Suite(.serialized) struct TarGNUInteropTests {
    struct Expected: Equatable {
        var type: TarEntryType
        var mode: UInt32
        var size: Int64
        var linkName: String
        var devMajor: UInt32 = 0
        var devMinor: UInt32 = 0
        var uid: Int64 = 0
        var xattrs: [Xattr] = []
    }

    /// Builds a tree under `root/top` and returns what each archive member should look like.
    static func buildTree(at root: String, full: Bool) throws -> [String: Expected] {
        var expected: [String: Expected] = [:]
        let top = root + "/top"
        try shell("mkdir -p '\(top)' && chmod 0755 '\(top)'")
        expected["top/"] = Expected(type: .directory, mode: 0o755, size: 0, linkName: "")

        try Data("hello\n".utf8).write(to: URL(fileURLWithPath: top + "/file.txt"))
        try shell("chmod 0640 '\(top)/file.txt'")
        expected["top/file.txt"] = Expected(type: .regular, mode: 0o640, size: 6, linkName: "")

        try Data(pattern(70_000)).write(to: URL(fileURLWithPath: top + "/big.bin"))
        try shell("chmod 4755 '\(top)/big.bin'")
        expected["top/big.bin"] = Expected(type: .regular, mode: 0o4755, size: 70_000, linkName: "")

        try Data().write(to: URL(fileURLWithPath: top + "/empty"))
        try shell("chmod 0600 '\(top)/empty'")
        expected["top/empty"] = Expected(type: .regular, mode: 0o600, size: 0, linkName: "")

        try shell("ln -s file.txt '\(top)/link'")
        expected["top/link"] = Expected(type: .symlink, mode: 0o777, size: 0, linkName: "file.txt")

        try shell("ln '\(top)/file.txt' '\(top)/hard'")
        // --sort=name: "file.txt" comes before "hard", so "hard" is the link.
        expected["top/hard"] = Expected(type: .hardlink, mode: 0o640, size: 0, linkName: "top/file.txt")

        guard full else { return expected }

        try shell("mkfifo -m 0620 '\(top)/fifo'")
        expected["top/fifo"] = Expected(type: .fifo, mode: 0o620, size: 0, linkName: "")

        if isRoot() {
            try shell("mknod -m 0666 '\(top)/null' c 1 3 && mknod -m 0660 '\(top)/loop' b 7 200")
            expected["top/null"] = Expected(type: .characterDevice, mode: 0o666, size: 0, linkName: "", devMajor: 1, devMinor: 3)
            expected["top/loop"] = Expected(type: .blockDevice, mode: 0o660, size: 0, linkName: "", devMajor: 7, devMinor: 200)
            try Data("big uid".utf8).write(to: URL(fileURLWithPath: top + "/owned"))
            try shell("chmod 0644 '\(top)/owned' && chown 3000000:3000000 '\(top)/owned'")
            expected["top/owned"] = Expected(type: .regular, mode: 0o644, size: 7, linkName: "", uid: 3_000_000)
        }

        // Long names: > 100 and > 255 bytes.
        let d1 = String(repeating: "a", count: 110)
        try shell("mkdir -p '\(top)/\(d1)' && chmod 0755 '\(top)/\(d1)' && printf x > '\(top)/\(d1)/f' && chmod 0644 '\(top)/\(d1)/f'")
        expected["top/\(d1)/"] = Expected(type: .directory, mode: 0o755, size: 0, linkName: "")
        expected["top/\(d1)/f"] = Expected(type: .regular, mode: 0o644, size: 1, linkName: "")
        let d2 = String(repeating: "b", count: 100) + "/" + String(repeating: "c", count: 100)
        try shell("mkdir -p '\(top)/\(d2)' && chmod 0755 '\(top)/\(String(repeating: "b", count: 100))' '\(top)/\(d2)'")
        let deep = "top/\(d2)/" + String(repeating: "f", count: 80)
        #expect(deep.utf8.count > 255)
        try Data("deep".utf8).write(to: URL(fileURLWithPath: root + "/" + deep))
        try shell("chmod 0644 '\(root)/\(deep)' && ln -s '\(String(repeating: "t", count: 150))' '\(top)/longlink'")
        expected["top/" + String(repeating: "b", count: 100) + "/"] = Expected(type: .directory, mode: 0o755, size: 0, linkName: "")
        expected["top/\(d2)/"] = Expected(type: .directory, mode: 0o755, size: 0, linkName: "")
        expected[deep] = Expected(type: .regular, mode: 0o644, size: 4, linkName: "")
        expected["top/longlink"] = Expected(type: .symlink, mode: 0o777, size: 0, linkName: String(repeating: "t", count: 150))

        // Extended attributes, when the filesystem takes them.
        let xattrPath = top + "/xattr"
        try Data("x".utf8).write(to: URL(fileURLWithPath: xattrPath))
        try shell("chmod 0644 '\(xattrPath)'")
        let set = try shell("python3 -c \"import os; os.setxattr('\(xattrPath)', 'user.x', b'1'); os.setxattr('\(xattrPath)', 'user.bin', bytes([0, 255, 10, 61]))\"")
        var xattrs: [Xattr] = []
        if set.status == 0 {
            xattrs = [Xattr(name: "user.bin", value: [0, 255, 10, 61]), Xattr(name: "user.x", value: [0x31])]
        }
        expected["top/xattr"] = Expected(type: .regular, mode: 0o644, size: 1, linkName: "", xattrs: xattrs)
        return expected
    }

    @Test(arguments: ["gnu", "posix", "oldgnu", "ustar", "v7"])
    func readsGNUTarArchives(format: String) throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let full = format == "gnu" || format == "posix"
        let expected = try Self.buildTree(at: root, full: full)
        try shell("touch -h -d @1600000000.25 $(find '\(root)/top' -depth) ")
        let archivePath = root + "/out.tar"
        let xattrFlag = format == "posix" ? "--xattrs --xattrs-include='*'" : ""
        let result = try shell("tar -C '\(root)' --sort=name --format=\(format) \(xattrFlag) -cf '\(archivePath)' top")
        #expect(result.status == 0, "\(result.output)")
        let archive = try readFile(archivePath)

        let scanned = try scanChunked(archive, chunk: 10_000)
        #expect(Set(scanned.map(\.entry.name.description)) == Set(expected.keys))
        for s in scanned {
            let e = s.entry
            guard let want = expected[e.name.description] else { continue }
            let got = Expected(type: e.type, mode: e.mode, size: e.size, linkName: e.linkName.description, devMajor: e.devMajor,
                               devMinor: e.devMinor, uid: e.uid, xattrs: e.xattrs.sorted { $0.name < $1.name })
            var want2 = want
            if format != "posix" { want2.xattrs = [] }
            #expect(got == want2, "\(format): \(e.name)")
            #expect(e.mtime == 1_600_000_000, "\(e.name)")
            #expect(e.mtimeNanoseconds == (format == "posix" ? 250_000_000 : 0), "\(e.name)")
            if e.type == .regular {
                // The data is where the scanner says it is.
                let onDisk = try readFile(root + "/" + e.name.description)
                let start = Int(s.dataOffset)
                #expect(Array(archive[start ..< start + Int(e.size)]) == onDisk, "\(e.name)")
            }
            if format != "v7" && e.uid == 0 { #expect(e.uname == "root") }
        }
    }

    @Test func gnuTarReadsWhatWeWrite() throws {
        let root = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let name150 = String(repeating: "p", count: 70) + "/" + String(repeating: "q", count: 70) + "/file150.txt"
        let name300 = (0 ..< 3).map { String(repeating: Character(String($0)), count: 96) }.joined(separator: "/") + "/file300.txt"
        #expect(name150.utf8.count >= 150 && name300.utf8.count >= 300)

        var items: [(TarEntry, [UInt8])] = []
        items.append((TarEntry(name: "top/", type: .directory, mode: 0o755, mtime: 1_600_000_000), []))
        let dir150 = String(repeating: "p", count: 70) + "/" + String(repeating: "q", count: 70) + "/"
        items.append((TarEntry(name: ByteString("top/" + String(repeating: "p", count: 70) + "/"), type: .directory, mode: 0o755), []))
        items.append((TarEntry(name: ByteString("top/" + dir150), type: .directory, mode: 0o755), []))
        var parent = "top/"
        for k in 0 ..< 3 {
            parent += String(repeating: Character(String(k)), count: 96) + "/"
            items.append((TarEntry(name: ByteString(parent), type: .directory, mode: 0o755), []))
        }
        let content150 = pattern(1234)
        items.append((TarEntry(name: ByteString("top/" + name150), type: .regular, mode: 0o640, size: 1234, mtime: 1_600_000_000), content150))
        items.append((TarEntry(name: ByteString("top/" + name300), type: .regular, mode: 0o600, size: 5, mtime: 1_600_000_000),
                      Array("three".utf8)))
        var owned = TarEntry(name: "top/owned", type: .regular, mode: 0o644, uid: 3_000_000, gid: 3_000_001, size: 3)
        owned.xattrs = [Xattr(name: "user.k", value: Array("v=1\n".utf8))]
        items.append((owned, [1, 2, 3]))
        var sym = TarEntry(name: "top/sym", type: .symlink, mode: 0o777)
        sym.linkName = ByteString(name150)
        items.append((sym, []))
        var hard = TarEntry(name: "top/hard", type: .hardlink, mode: 0o640)
        hard.linkName = ByteString("top/" + name300)
        items.append((hard, []))
        items.append((TarEntry(name: "top/fifo", type: .fifo, mode: 0o644), []))
        if isRoot() {
            var chr = TarEntry(name: "top/null", type: .characterDevice, mode: 0o666)
            chr.devMajor = 1
            chr.devMinor = 3
            items.append((chr, []))
        }
        var subsecond = TarEntry(name: "top/nanos", type: .regular, mode: 0o644, mtime: 1_600_000_000)
        subsecond.mtimeNanoseconds = 123_000_000
        items.append((subsecond, []))

        var archive: [UInt8] = []
        for (entry, data) in items {
            archive += try TarWriter.header(for: entry, keepSubsecondMtime: entry.name == "top/nanos")
            archive += data + [UInt8](repeating: 0, count: entry.type == .regular ? TarWriter.padding(forSize: Int64(data.count)) : 0)
        }
        archive += TarWriter.endOfArchive
        let archivePath = root + "/ours.tar"
        try Data(archive).write(to: URL(fileURLWithPath: archivePath))

        // Our own scanner agrees.
        #expect(try TarScanner.scan(archive).map(\.entry) == items.map(\.0))

        let list = try shell("tar --numeric-owner -tvf '\(archivePath)'")
        #expect(list.status == 0, "\(list.output)")
        let lines = list.output.split(separator: "\n").map(String.init)
        #expect(lines.count == items.count, "\(list.output)")
        for (entry, _) in items {
            #expect(lines.contains { $0.contains(" " + entry.name.description) }, "\(entry.name) not listed")
        }
        #expect(lines.contains { $0.contains("3000000/3000001") && $0.hasSuffix("top/owned") }, "\(list.output)")
        #expect(!list.output.contains("PaxHeaders"))
        #expect(!list.output.contains("Ignoring unknown extended header"))

        let out = root + "/x"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let sameOwner = isRoot() ? "--same-owner" : "--no-same-owner"
        let extract = try shell("tar --xattrs --xattrs-include='*' --numeric-owner \(sameOwner) -C '\(out)' -xf '\(archivePath)'")
        #expect(extract.status == 0, "\(extract.output)")
        #expect(try readFile(out + "/top/" + name150) == content150)
        #expect(try readFile(out + "/top/" + name300) == Array("three".utf8))
        #expect(try readFile(out + "/top/hard") == Array("three".utf8))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out + "/top/sym") == name150)
        let stat150 = try shell("stat -c '%a %.9Y' '\(out)/top/\(name150)'")
        #expect(stat150.output == "640 1600000000.000000000\n")
        let statNanos = try shell("stat -c '%.9Y' '\(out)/top/nanos'")
        #expect(statNanos.output == "1600000000.123000000\n")
        if isRoot() {
            let owner = try shell("stat -c '%u:%g' '\(out)/top/owned'")
            #expect(owner.output == "3000000:3000001\n")
            let dev = try shell("stat -c '%F %t:%T' '\(out)/top/null'")
            #expect(dev.output.hasPrefix("character special file 1:3"), "\(dev.output)")
        }
        let fifo = try shell("stat -c '%F' '\(out)/top/fifo'")
        #expect(fifo.output.hasPrefix("fifo"), "\(fifo.output)")
        let xattr = try shell("python3 -c \"import os,sys; sys.stdout.write(repr(os.getxattr('\(out)/top/owned', 'user.k')))\"")
        if xattr.status == 0 {
            #expect(xattr.output == "b'v=1\\n'")
        }
    }
}

/// Names and link targets are the header's bytes: no decoding, no normalization.
@Suite struct TarNameBytesTests {
    @Test func namesRoundTripAsBytes() throws {
        let names: [ByteString] = [
            ByteString(bytes: Array("caf".utf8) + [0xE9]), ByteString(bytes: Array("caf".utf8) + [0xE8]),
            "caf\u{e9}", "cafe\u{301}", "new\nline", "cr\r",
            ByteString(bytes: [0xFF, 0xFE] + Array(repeating: UInt8(ascii: "x"), count: 150)),
        ]
        var archive: [UInt8] = []
        for n in names { archive += try TarWriter.header(for: TarEntry(name: n, type: .regular)) }
        var link = TarEntry(name: "link", type: .symlink)
        link.linkName = ByteString(bytes: Array("/target-".utf8) + [0xFF])
        archive += try TarWriter.header(for: link)
        archive += TarWriter.endOfArchive
        let scanned = try TarScanner.scan(archive).map(\.entry)
        #expect(scanned.map(\.name) == names + ["link"])
        #expect(Set(scanned.map(\.name)).count == names.count + 1)
        #expect(scanned.last?.linkName == link.linkName)
    }
}
