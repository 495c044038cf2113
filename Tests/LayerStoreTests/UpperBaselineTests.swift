import Foundation
import Testing
@testable import Basics
@testable import OCI
@testable import Archive
@testable import UpperFormat
@testable import LayerWriter

/// A scratch directory removed when the value goes away.
private final class Scratch {
    let path = NSTemporaryDirectory() + "umoci-baseline-" + UUID().uuidString
    init() { try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true) }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func callAsFunction(_ name: String) -> String { path + "/" + name }
}

private func lstatOf(_ path: String) -> stat {
    var st = stat()
    precondition(lstat(path, &st) == 0, path)
    return st
}

/// The entry names of a layer written by DirectoryDiff over `directory` with `baseline`.
private func layerNames(of directory: String, baseline: UpperBaseline, scratch: Scratch) throws -> [String] {
    let layout = try ImageLayout.create(at: scratch("layout-" + UUID().uuidString))
    let writer = try LayerBlobWriter(layout: layout, compression: LayerCompression.none)
    var diff = DirectoryDiff(writer: writer, baseline: baseline)
    try diff.addContents(ofDirectory: directory)
    try diff.addWhiteoutsForRemovedEntries()
    try diff.finish()
    let (descriptor, _) = try writer.finish()
    return try TarScanner.scan(try Files.read(layout.blobPath(descriptor.digest))).map(\.entry.name.description)
}

@Suite struct UpperBaselineTests {
    /// A file whose ctime is not before the time the stamps were taken may have changed again
    /// within the same clock tick without a new stamp: it never counts as unchanged.
    @Test func racilyCleanEntriesCountAsChanged() throws {
        let dir = Scratch()
        try "1\n".write(toFile: dir("f"), atomically: false, encoding: .utf8)
        let st = lstatOf(dir("f"))
        var baseline = UpperBaseline()
        baseline.stamps["f"] = UpperBaseline.stamp(st)
        #expect(baseline.unchanged("f", st))
        baseline.started = UpperBaseline.FileTime(st.st_ctim)
        #expect(!baseline.unchanged("f", st))
        var later = st.st_ctim
        later.tv_nsec += 1
        baseline.started = UpperBaseline.FileTime(later)
        #expect(baseline.unchanged("f", st))
        #expect(!baseline.unchanged("g", st))
        // The file system clock: not before the file's ctime, since the file came first.
        #expect(UpperBaseline.fileSystemNow(besides: dir("f")) >= UpperBaseline.FileTime(st.st_ctim))
    }

    @Test func fileRoundTrip() throws {
        let dir = Scratch()
        var baseline = UpperBaseline()
        baseline.stamps["a"] = "16384 1 4096 1.2 3.4"
        baseline.stamps["a/b c"] = "32768 2 5 1.2 3.4"
        // Any byte but NUL may be in a name: newlines, a trailing CR, bytes that are not UTF-8,
        // and the NFC and NFD spellings of one word as two names.
        baseline.stamps["a/new\nline"] = "32768 3 5 1.2 3.4"
        baseline.stamps["a/cr\r"] = "32768 4 5 1.2 3.4"
        baseline.stamps[ByteString(bytes: [0x61, 0x2F, 0xFF, 0xE9])] = "32768 5 5 1.2 3.4"
        baseline.stamps["a/caf\u{e9}"] = "32768 6 5 1.2 3.4"
        baseline.stamps["a/cafe\u{301}"] = "32768 7 5 1.2 3.4"
        #expect(baseline.stamps.count == 7)
        baseline.started = UpperBaseline.FileTime(timespec(tv_sec: 1_700_000_000, tv_nsec: 42))
        try baseline.write(dir("baseline"))
        #expect(try UpperBaseline.read(dir("baseline")) == baseline)
        try "garbage\n".write(toFile: dir("bad"), atomically: false, encoding: .utf8)
        #expect(throws: StoreError.self) { try UpperBaseline.read(dir("bad")) }
    }

    /// A bundle made by an earlier version has the line format.
    @Test func readsTheLineFormat() throws {
        let dir = Scratch()
        try "#started 5.6\n16384 1 4096 1.2 3.4\ta\n32768 2 5 1.2 3.4\ta/b c\n".write(toFile: dir("old"), atomically: false, encoding: .utf8)
        let read = try #require(try UpperBaseline.read(dir("old")))
        #expect(read.stamps == ["a": "16384 1 4096 1.2 3.4", "a/b c": "32768 2 5 1.2 3.4"])
        #expect(read.started == UpperBaseline.FileTime(timespec(tv_sec: 5, tv_nsec: 6)))
    }

    /// What the baseline had and is gone gets one whiteout for its topmost missing path, and
    /// none below a parent that is gone or is no longer a directory (a whiteout there would
    /// bring the parent back, or make the layer unextractable).
    @Test func whiteoutsOnlyWhereTheParentIsADirectory() throws {
        let scratch = Scratch()
        let upper = scratch("upper")
        try FileManager.default.createDirectory(atPath: upper + "/kept", withIntermediateDirectories: true)
        try "now a file\n".write(toFile: upper + "/p", atomically: false, encoding: .utf8)
        var baseline = UpperBaseline()
        baseline.stamps["gone"] = "32768 7 1 1.0 1.0"
        baseline.stamps["logs/app.log"] = "32768 8 1 1.0 1.0"   // parent not in the baseline, gone
        baseline.stamps["p/x"] = "32768 9 1 1.0 1.0"            // parent is a file now
        baseline.stamps["kept"] = UpperBaseline.stamp(lstatOf(upper + "/kept"))
        baseline.stamps["kept/old"] = "32768 10 1 1.0 1.0"
        let names = try layerNames(of: upper, baseline: baseline, scratch: scratch)
        #expect(Set(names) == [".wh.gone", "p", "kept/.wh.old"], "\(names)")
    }

    /// Sockets have no tar form: they are neither written nor recorded as seen, so a rebase
    /// never counts them as packed.
    @Test func socketsAreLeftOut() throws {
        let scratch = Scratch()
        let upper = scratch("upper")
        try FileManager.default.createDirectory(atPath: upper, withIntermediateDirectories: true)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let name = Array("\(upper)/app.sock".utf8)
        try #require(name.count < 100)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: name) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0)
        let layout = try ImageLayout.create(at: scratch("layout"))
        let writer = try LayerBlobWriter(layout: layout, compression: LayerCompression.none)
        var diff = DirectoryDiff(writer: writer)
        try diff.addContents(ofDirectory: upper)
        #expect(diff.entryCount == 0)
        #expect(diff.seen.stamps.isEmpty)
        writer.abort()
    }
}

/// Reading a file's xattrs for a layer: a failure is an error naming the file and the xattr,
/// never a layer silently without it; only "no xattrs here" and "removed meanwhile" pass.
@Suite struct XattrReadTests {
    static let names = Array("user.a\0user.b\0".utf8).map { CChar(bitPattern: $0) }

    func read(failing failure: Int32) throws -> [Xattr] {
        try Xattr.read("/some/file", listing: { buffer, size in
            guard let buffer else { return Self.names.count }
            for (i, c) in Self.names.enumerated() where i < size { buffer[i] = c }
            return Self.names.count
        }, value: { name, buffer, size in
            if String(cString: name) == "user.b" { errno = failure; return -1 }
            guard let buffer else { return 1 }
            buffer.storeBytes(of: UInt8(ascii: "v"), as: UInt8.self)
            return 1
        })
    }

    @Test func failuresAreErrors() throws {
        #expect(throws: StoreError.self) { try read(failing: EIO) }
        #expect(throws: StoreError.self) { try read(failing: EACCES) }
        do {
            _ = try read(failing: EIO)
        } catch let error as StoreError {
            #expect(error.code == .systemCall && error.errno == EIO && error.subject == "/some/file")
        }
    }

    @Test func removedMeanwhileIsSkipped() throws {
        #expect(try read(failing: ENODATA).map(\.name) == ["user.a"])
    }

    @Test func noXattrSupportMeansNone() throws {
        let none = try Xattr.read("/f", listing: { _, _ in errno = ENOTSUP; return -1 }, value: { _, _, _ in -1 })
        #expect(none.isEmpty)
        #expect(throws: StoreError.self) {
            try Xattr.read("/f", listing: { _, _ in errno = EIO; return -1 }, value: { _, _, _ in -1 })
        }
    }
}
