import Foundation
import Testing
@testable import Basics
@testable import OCI
@testable import Archive
@testable import LayerView

/// ParallelGzipEncoder: one standard gzip member, read back by this project's decoder, by
/// zlib (Python's zlib module) and by GNU gzip, the same bytes whatever the threads do.
@Suite("ParallelGzip")
struct ParallelGzipTests {
    typealias F = CompressionFixture
    static let chunk = 64 * 1024
    static let engines: [DeflateEngine] = [.isal(level: 3), .zlib(level: 6)]

    /// Encodes `input` fed in `piece`-sized writes.
    static func encode(_ input: [UInt8], engine: DeflateEngine, chunk: Int = chunk, piece: Int = 7777,
                       workers: Int? = 2, slots: Int? = nil) throws -> [UInt8] {
        try F.gzip(input, engine: engine, chunk: chunk, piece: piece, workers: workers, slots: slots)
    }

    /// CRC-32 (IEEE, reflected), bit by bit: independent of zlib and ISA-L.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var table = [UInt32](repeating: 0, count: 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            table[i] = c
        }
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xff)] ^ (crc >> 8) }
        return ~crc
    }

    static func littleEndian32(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// Python's zlib inflates `blob` as gzip; prints "eof unused_length" then the output's
    /// sha256 and length, compared with ours.
    static func zlibReads(_ blob: [UInt8], as expected: [UInt8]) throws {
        let scratch = F.Scratch()
        let file = try scratch.write("blob.gz", blob)
        let result = scratch.path("result")
        try F.shell("""
            python3 -c 'import sys, zlib, hashlib
            d = zlib.decompressobj(31)
            data = d.decompress(open(sys.argv[1], "rb").read()) + d.flush()
            print(d.eof, len(d.unused_data), len(data), hashlib.sha256(data).hexdigest())' \(file) > \(result)
            """)
        let line = try String(contentsOfFile: result, encoding: .utf8)
        let digest = try DigestHasher.digest(of: expected)
        // One complete member and nothing after it.
        #expect(line == "True 0 \(expected.count) \(digest.encoded)\n")
    }

    static func sample(_ count: Int, from data: [UInt8] = F.data) -> [UInt8] {
        Array(data.prefix(count))
    }

    @Test(arguments: engines)
    func roundTripsAroundChunkBoundaries(_ engine: DeflateEngine) throws {
        let c = ParallelGzipTests.chunk
        for size in [0, 1, c - 1, c, c + 1, 2 * c, 2 * c + 1, 37 * c + 4321] {
            let input = ParallelGzipTests.sample(size)
            let blob = try ParallelGzipTests.encode(input, engine: engine)
            #expect(Array(blob.prefix(10)) == [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255], "size \(size)")
            #expect(try F.gunzip(blob, spacing: nil).out == input, "size \(size)")
            // The trailer: CRC-32 and length of the input.
            #expect(ParallelGzipTests.littleEndian32(blob[(blob.count - 8)..<(blob.count - 4)]) == ParallelGzipTests.crc32(input),
                    "size \(size)")
            #expect(ParallelGzipTests.littleEndian32(blob[(blob.count - 4)...]) == UInt32(size), "size \(size)")
            try ParallelGzipTests.zlibReads(blob, as: input)
        }
    }

    @Test(arguments: engines)
    func manyChunksReadByGzipAndZlib(_ engine: DeflateEngine) throws {
        let blob = try ParallelGzipTests.encode(F.data, engine: engine, chunk: 1 << 20, piece: 1 << 20)
        let decoded = try F.gunzip(blob, spacing: 1 << 20)
        #expect(decoded.out == F.data)
        try ParallelGzipTests.zlibReads(blob, as: F.data)
        let scratch = F.Scratch()
        let file = try scratch.write("blob.gz", blob)
        try F.shell("gzip -dc < \(file) > \(scratch.path("out"))")
        #expect(try F.read(scratch.path("out")) == F.data)
        // Random reads through the access points recorded on the chunked stream.
        try F.checkRandomReads(blob: blob, points: decoded.points, expected: F.data,
                               offsets: F.offsets(points: decoded.points, total: F.data.count))
    }

    @Test(arguments: engines)
    func chunkingCostsLittleRatio(_ engine: DeflateEngine) throws {
        // Each chunk starts with the previous 32 KiB as dictionary, so 1 MiB chunks compress
        // nearly as well as one chunk holding everything (a serial stream).
        let whole = try ParallelGzipTests.encode(F.data, engine: engine, chunk: 64 << 20, piece: 1 << 20)
        let chunked = try ParallelGzipTests.encode(F.data, engine: engine, chunk: 1 << 20, piece: 1 << 20)
        #expect(Double(chunked.count) <= Double(whole.count) * 1.005, "\(chunked.count) vs \(whole.count)")
        if engine == .zlib(level: 6) {
            let serial = try F.gzip(F.data, level: 6)
            #expect(Double(chunked.count) <= Double(serial.count) * 1.005, "\(chunked.count) vs \(serial.count)")
        }
    }

    @Test(arguments: engines)
    func incompressibleData(_ engine: DeflateEngine) throws {
        var random = F.Random(state: 12345)
        let input = (0..<(5 * ParallelGzipTests.chunk + 3)).map { _ in UInt8(truncatingIfNeeded: random.next() >> 17) }
        let blob = try ParallelGzipTests.encode(input, engine: engine)
        #expect(try F.gunzip(blob, spacing: nil).out == input)
        try ParallelGzipTests.zlibReads(blob, as: input)
        #expect(blob.count < input.count + input.count / 100 + 200)
    }

    @Test(arguments: engines)
    func sameBytesWhateverTheThreadsAndWrites(_ engine: DeflateEngine) throws {
        let input = ParallelGzipTests.sample(9 << 20)
        let reference = try ParallelGzipTests.encode(input, engine: engine, piece: 1 << 20, workers: 1, slots: 2)
        for (piece, workers, slots) in [(65_537, 4, 3), (100_003, 2, nil), (3 << 20, 3, 16), (input.count, 8, 2)] as [(Int, Int, Int?)] {
            #expect(try ParallelGzipTests.encode(input, engine: engine, piece: piece, workers: workers, slots: slots) == reference,
                    "piece \(piece), \(workers) workers, \(slots.map(String.init) ?? "default") slots")
        }
        #expect(try ParallelGzipTests.encode(input, engine: engine, piece: 12_345) == reference)
    }

    /// pthread_create returns its error and leaves errno alone: the error reports the returned
    /// code (it used to report whatever errno held), and the worker already started is stopped.
    @Test func aThreadThatCannotStartIsReportedByItsCode() throws {
        var started = 0
        let error = expectError(.systemCall) {
            try ParallelGzipEncoder(engine: .layer, chunkSize: ParallelGzipTests.chunk, workers: 2, slots: 4) { thread, main, context in
                started += 1
                if started == 1 { return DeflatePool.startWorker(&thread, main, context) }
                errno = ENOENT
                return EAGAIN
            }
        }
        #expect(error?.errno == EAGAIN)
        #expect(started == 2)
    }

    @Test func failuresAreReportedAndStick() throws {
        expectError(.invalidInput) { try ParallelGzipEncoder(chunkSize: 1000) }
        expectError(.invalidInput) { try ParallelGzipEncoder(engine: .isal(level: 4)) }
        // A failing output (a full disk) fails the call and every later one.
        let encoder = try ParallelGzipEncoder(chunkSize: ParallelGzipTests.chunk, workers: 2, slots: 2)
        let input = ParallelGzipTests.sample(20 * ParallelGzipTests.chunk)
        let full = StoreError.system("write", "layer.tar", errno: ENOSPC)
        #expect(throws: full) {
            try input.withUnsafeBytes { bytes in
                try encoder.encode(bytes) { (_) throws(StoreError) in throw full }
            }
        }
        #expect(throws: full) { try encoder.finish { _ in } }
    }
}
