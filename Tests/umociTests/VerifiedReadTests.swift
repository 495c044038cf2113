import Foundation
import Basics
import OCI
import LayerView
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

/// Under a live mount, a layer blob changed in place (same size, mtime put back) is never
/// served: reading a file whose data lies in the changed span is EIO, with one line in the
/// mount's log naming the blob and the span; the rest of the file still reads.
@Suite struct VerifiedReadTests {
    @Test(.enabled(if: fuseAvailable, "FUSE is not available here (/dev/fuse)"))
    func changedBlobUnderALiveMountIsEIO() throws {
        let dir = TemporaryDirectory()
        let L = try copyOfFixtures(to: dir("L"))
        let bundle = MountedBundle(dir("bundle"))
        ok(try umoci("unpack", "--cache-dir", dir("cache"), "--image", L + ":big", bundle.paths.bundle))

        let image = try ImageLayout(opening: L).loadImage(tag: "big")
        let layer = image.manifest.layers[0]
        let index = try #require(IndexCache(directory: dir("cache")).cached(layer, diffID: try Digest(parsing: image.config.diffIDs[0])))
        let points = index.accessPoints
        try #require(index.compression == .gzip && points.count >= 10)
        let file = try #require(index.entries.first { $0.entry.name == ByteString("opt/big.bin") })
        // A file offset inside span k (from point k-1 to point k).
        func offset(inSpan k: Int) -> off_t { off_t(points[k - 1].uncompressedOffset + 1000 - file.dataOffset) }

        // The blob changed in place in span 5, its mtime put back, its cached pages dropped.
        let blob = blobPath(L, layer.digest.description)
        var st = stat()
        try #require(stat(blob, &st) == 0)
        let w = open(blob, O_RDWR)
        try #require(w >= 0)
        let at = off_t((points[4].compressedOffset + points[5].compressedOffset) / 2)
        var byte: UInt8 = 0
        try #require(pread(w, &byte, 1, at) == 1)
        byte = ~byte
        try #require(pwrite(w, &byte, 1, at) == 1)
        var times = [st.st_atim, st.st_mtim]
        try #require(futimens(w, &times) == 0)
        posix_fadvise(w, 0, 0, POSIX_FADV_DONTNEED)
        close(w)

        try {
            let fd = open(bundle.paths.rootfs + "/opt/big.bin", O_RDONLY | O_NOFOLLOW)
            try #require(fd >= 0, "open: \(String(cString: strerror(errno)))")
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 65536)
            errno = 0
            let bad = pread(fd, &buffer, buffer.count, offset(inSpan: 5))
            #expect(bad == -1 && errno == EIO, "read of the changed span: \(bad) bytes, errno \(errno)")
            #expect(pread(fd, &buffer, buffer.count, offset(inSpan: 2)) == buffer.count)
            #expect(pread(fd, &buffer, buffer.count, offset(inSpan: 8)) == buffer.count)
        }()

        let log = (try? String(contentsOfFile: bundle.paths.log, encoding: .utf8)) ?? ""
        let lines = log.split(separator: "\n").filter { $0.contains("span 5 of \(points.count + 1)") }
        #expect(lines.count >= 1 && lines.allSatisfy { $0.contains("blob \(layer.digest)") && $0.contains("/opt/big.bin") }, "\(log)")
        ok(try umoci("umount", bundle.paths.bundle))
    }
}
