#if canImport(Glibc)
import Glibc
#endif
import Basics
import OCI
import Archive
import LayerView
import Testing

/// Every read of a layer checks the span it comes from against the index's digest: a blob
/// changed in place after it was indexed (same size, mtime put back) is an error naming the
/// blob and the span, never other bytes, and the spans that did not change still read.
@Suite struct SpanVerificationTests {
    /// A fresh directory with the fixture images `cases` (scripts/fixtures/make_image.py) in
    /// `<dir>/L`.
    static func images(_ cases: String...) throws -> String {
        var template = Array("/tmp/umoci-span-tests-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        let dir = try #require(made.map { String(cString: $0) })
        var repository = #filePath
        for _ in 0..<3 { repository = String(repository[..<repository.lastIndex(of: "/")!]) }
        for c in cases {
            let status = system("python3 '\(repository)/scripts/fixtures/make_image.py' '\(dir)/L' \(c) >/dev/null")
            try #require(status == 0, "make_image.py \(c)")
        }
        return dir
    }

    /// Inverts the byte at `offset` of `path` in place, then gives the file its mtime back.
    static func flipByte(_ path: String, at offset: Int64) throws {
        var st = stat()
        try #require(stat(path, &st) == 0)
        let fd = open(path, O_RDWR)
        try #require(fd >= 0)
        defer { close(fd) }
        var byte: UInt8 = 0
        try #require(pread(fd, &byte, 1, off_t(offset)) == 1)
        byte = ~byte
        try #require(pwrite(fd, &byte, 1, off_t(offset)) == 1)
        var times = [st.st_atim, st.st_mtim]
        try #require(futimens(fd, &times) == 0)
        var after = stat()
        try #require(fstat(fd, &after) == 0 && after.st_size == st.st_size && after.st_mtim.tv_sec == st.st_mtim.tv_sec
                     && after.st_mtim.tv_nsec == st.st_mtim.tv_nsec)
        // Later reads see the new bytes, not pages cached before.
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
    }

    func read(_ view: MergedView, _ inode: Int32, at offset: Int64, _ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let n = try out.withUnsafeMutableBytes { try view.read(inode: inode, at: offset, into: $0) }
        return Array(out[..<n])
    }

    @Test func changedGzipSpanIsAnErrorAndOtherSpansStillRead() throws {
        let dir = try Self.images("big")
        defer { try? Files.removeTree(dir) }
        let layout = try ImageLayout(opening: dir + "/L")
        let image = try layout.loadImage(tag: "big")
        let cache = IndexCache(directory: dir + "/cache")
        // Two views opened before the change, as by a mount: `reference` reads the spans that
        // do not change (and keeps them), `view` reads nothing before the change.
        let reference = try MergedView.open(layout: layout, image: image, cache: cache)
        let view = try MergedView.open(layout: layout, image: image, cache: cache)
        let layer = image.manifest.layers[0]
        let index = try #require(cache.cached(layer, diffID: try Digest(parsing: image.config.diffIDs[0])))
        let points = index.accessPoints
        try #require(index.compression == .gzip && points.count >= 10)
        #expect(index.spanDigests.count == 32 * (points.count + 1))
        let file = try #require(index.entries.first { $0.entry.name == ByteString("opt/big.bin") })
        let inode = view.inodeNumber(of: try #require(view.lookup(ByteString("opt/big.bin"))))
        // File offsets inside spans 2, 5 and 8 (span k runs from point k-1 to point k).
        func offset(inSpan k: Int) -> Int64 { points[k - 1].uncompressedOffset + 1000 - file.dataOffset }
        let before2 = try read(reference, inode, at: offset(inSpan: 2), 65536)
        let before8 = try read(reference, inode, at: offset(inSpan: 8), 65536)

        let blob = layout.blobPath(layer.digest)
        try Self.flipByte(blob, at: (points[4].compressedOffset + points[5].compressedOffset) / 2)

        let error = expectError(.corrupt) { try read(view, inode, at: offset(inSpan: 5), 65536) }
        let text = error?.description ?? ""
        #expect(text.contains("blob \(layer.digest)") && text.contains("span 5 of \(points.count + 1)"), "\(text)")
        // Again: a mismatch is not kept as if it were checked.
        expectError(.corrupt) { try read(view, inode, at: offset(inSpan: 5) + 4096, 4096) }
        #expect(try read(view, inode, at: offset(inSpan: 2), 65536) == before2)
        #expect(try read(view, inode, at: offset(inSpan: 8), 65536) == before8)
    }

    /// Uncompressed layers are checked in spans of the blob, zstd layers in spans of the
    /// decompressed copy reads come from.
    @Test func changedUncompressedBlobAndZstdCopyAreErrors() throws {
        let dir = try Self.images("formats")
        defer { try? Files.removeTree(dir) }
        let layout = try ImageLayout(opening: dir + "/L")
        let image = try layout.loadImage(tag: "formats")
        let cache = IndexCache(directory: dir + "/cache")
        let view = try MergedView.open(layout: layout, image: image, cache: cache)
        // c2: zstd, c3: uncompressed (make_image.py's case_formats).
        let zstd = image.manifest.layers[2], plain = image.manifest.layers[3]
        let plainIndex = try #require(cache.cached(plain, diffID: try Digest(parsing: image.config.diffIDs[3])))
        let plainFile = try #require(plainIndex.entries.first { $0.entry.name == ByteString("c3/data") })
        try Self.flipByte(layout.blobPath(plain.digest), at: plainFile.dataOffset + 10)
        let zstdIndex = try #require(cache.cached(zstd, diffID: try Digest(parsing: image.config.diffIDs[2])))
        let zstdFile = try #require(zstdIndex.entries.first { $0.entry.name == ByteString("c2/data") })
        try Self.flipByte(cache.zstdCopyPath(zstd.digest), at: zstdFile.dataOffset + 10)
        for (name, what) in [("c3/data", "blob \(plain.digest): span 0 of 1"),
                             ("c2/data", "decompressed copy of blob \(zstd.digest): span 0 of 1")] {
            let inode = view.inodeNumber(of: try #require(view.lookup(ByteString(name))))
            let error = expectError(.corrupt) { try read(view, inode, at: 0, 100) }
            #expect(error?.description.contains(what) == true, "\(String(describing: error))")
        }
        // The layers not changed still read.
        let inode = view.inodeNumber(of: try #require(view.lookup(ByteString("c0/data"))))
        #expect(try read(view, inode, at: 0, 5) == Array("gzip ".utf8))
    }
}
