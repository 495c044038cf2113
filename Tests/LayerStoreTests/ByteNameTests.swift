import Foundation
import Testing
import CLinux
@testable import Basics
@testable import OCI
@testable import Archive
@testable import LayerWriter

/// Xattr names are bytes end to end: a name that is not UTF-8 goes from a PAX record, or from
/// the kernel's listxattr, into a layer unchanged (it used to be decoded into a String, its
/// invalid bytes replaced by U+FFFD, so repack wrote another name than the image had).
@Suite struct ByteNameTests {
    /// "user.caf" and a Latin-1 "é": not UTF-8.
    static let name: [UInt8] = Array("user.caf".utf8) + [0xE9]
    static let record: [UInt8] = Array("SCHILY.xattr.".utf8) + name + [UInt8(ascii: "=")]

    @Test func paxXattrNameSurvivesScanningAndWriting() throws {
        var body: [UInt8] = []
        TarWriter.appendPAXRecord(&body, key: Array("SCHILY.xattr.".utf8) + Self.name, value: [0x31])
        let archive = header(name: "PaxHeaders.0/f", flag: UInt8(ascii: "x"), size: body.count) + padded(body)
            + header(name: "f", flag: UInt8(ascii: "0"), size: 0) + TarWriter.endOfArchive
        let entry = try #require(try TarScanner.scan(archive).first).entry
        #expect(entry.xattrs.count == 1 && entry.xattrs.first?.value == [0x31])
        let written = try TarWriter.header(for: entry)
        let kept = contains(written, Self.record)
        #expect(kept, "the PAX record keeps the name's bytes")
    }

    @Test func kernelXattrNameGoesIntoTheLayerUnchanged() throws {
        let dir = NSTemporaryDirectory() + "umoci-bytename-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir + "/tree", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(FileManager.default.createFile(atPath: dir + "/tree/f", contents: Data("x".utf8)))
        let cName = Self.name.map { CChar(bitPattern: $0) } + [0]
        guard lsetxattr(dir + "/tree/f", cName, "1", 1, 0) == 0 else {
            // A file system without user xattrs (tmpfs before 6.6) cannot hold the name.
            #expect(errno == ENOTSUP || errno == EPERM)
            return
        }
        let layout = try ImageLayout.create(at: dir + "/layout")
        let writer = try LayerBlobWriter(layout: layout, compression: LayerCompression.none)
        var diff = DirectoryDiff(writer: writer)
        try diff.addContents(ofDirectory: dir + "/tree")
        try diff.finish()
        let (descriptor, _) = try writer.finish()
        let blob = try Files.read(layout.blobPath(descriptor.digest))
        let kept = contains(blob, Self.record)
        #expect(kept, "the layer's PAX record names the xattr as the kernel does")
        #expect(try TarScanner.scan(blob).first { $0.entry.name == "f" }?.entry.xattrs.map(\.name) == [ByteString(bytes: Self.name)])
    }

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { haystack[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    private func padded(_ data: [UInt8]) -> [UInt8] {
        data + [UInt8](repeating: 0, count: TarWriter.padding(forSize: Int64(data.count)))
    }

    /// A ustar header with `name`, type `flag` and `size`.
    private func header(name: String, flag: UInt8, size: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 512)
        for (k, c) in name.utf8.enumerated() { b[k] = c }
        TarWriter.formatOctal(&b, 100 ..< 108, 0o644)
        TarWriter.formatOctal(&b, 108 ..< 116, 0)
        TarWriter.formatOctal(&b, 116 ..< 124, 0)
        TarWriter.formatOctal(&b, 124 ..< 136, Int64(size))
        TarWriter.formatOctal(&b, 136 ..< 148, 1_600_000_000)
        b[156] = flag
        for (k, c) in "ustar\u{0}00".utf8.enumerated() { b[257 + k] = c }
        for k in 148 ..< 156 { b[k] = 0x20 }
        TarWriter.formatOctal(&b, 148 ..< 155, b.reduce(0) { $0 + Int64($1) })
        b[155] = 0x20
        return b
    }
}
