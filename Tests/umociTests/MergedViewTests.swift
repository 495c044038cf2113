import Foundation
import Basics
import OCI
import LayerView
import Testing

/// Random reads through the merged view return the bytes Debian's umoci extracts.
@Suite struct MergedViewTests {
    func extracted(_ dir: TemporaryDirectory, _ name: String) throws -> String {
        ok(try run(debianUmoci, ["raw", "unpack", "--image", fixtureLayout + ":" + name + "-gzip", dir("theirs")]))
        return dir("theirs")
    }

    func view(_ dir: TemporaryDirectory, _ name: String, regionCacheBytes: Int = 64 << 20) throws -> MergedView {
        let layout = try ImageLayout(opening: fixtureLayout)
        return try MergedView.open(layout: layout, image: layout.loadImage(tag: name), cache: IndexCache(directory: dir("cache")),
                                   options: .init(regionCacheBytes: regionCacheBytes))
    }

    func read(_ view: MergedView, _ path: String, at offset: Int64, count: Int) throws -> Data {
        let node = try #require(view.lookup(ByteString(path)))
        var buffer = [UInt8](repeating: 0, count: count)
        let n = try buffer.withUnsafeMutableBytes { try view.read(inode: view.inodeNumber(of: node), at: offset, into: $0) }
        return Data(buffer[0..<n])
    }

    @Test(arguments: [64 << 20, 0])
    func randomReadsOfALargeFile(regionCacheBytes: Int) throws {
        let dir = TemporaryDirectory()
        let expected = try Data(contentsOf: URL(fileURLWithPath: try extracted(dir, "big") + "/opt/big.bin"))
        let v = try view(dir, "big", regionCacheBytes: regionCacheBytes)
        var rng = SystemRandomNumberGenerator()
        var cases: [(Int64, Int)] = [(0, 4096), (Int64(expected.count) - 10, 100), (Int64(expected.count), 10), (1 << 20, 3 << 20)]
        for _ in 0..<150 {
            cases.append((Int64.random(in: 0..<Int64(expected.count), using: &rng), Int.random(in: 1...300_000, using: &rng)))
        }
        for (offset, count) in cases {
            let got = try read(v, "opt/big.bin", at: offset, count: count)
            let end = min(expected.count, Int(offset) + count)
            let want = Int(offset) < expected.count ? expected[Int(offset)..<end] : Data()
            #expect(got == want, "read at \(offset) of \(count)")
        }
        // The zstd layer's copy of the first 8 MiB.
        let zstd = try read(v, "opt/big-zstd.bin", at: 5_000_000, count: 1_000_000)
        #expect(zstd == expected[5_000_000..<6_000_000])
    }

    @Test func concurrentReaders() throws {
        let dir = TemporaryDirectory()
        let expected = try Data(contentsOf: URL(fileURLWithPath: try extracted(dir, "big") + "/opt/big.bin"))
        let v = try view(dir, "big", regionCacheBytes: 4 << 20)
        let node = try #require(v.lookup("opt/big.bin"))
        let inode = v.inodeNumber(of: node)
        let mismatches = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            var buffer = [UInt8](repeating: 0, count: 65536)
            for i in 0..<40 {
                let offset = Int64((worker * 7919 + i * 104729) % (expected.count - 65536))
                let n = (try? buffer.withUnsafeMutableBytes { try v.read(inode: inode, at: offset, into: $0) }) ?? -1
                if n != 65536 || Data(buffer) != expected[Int(offset)..<(Int(offset) + 65536)] {
                    mismatches.withLock { $0 += 1 }
                }
            }
        }
        #expect(mismatches.withLock { $0 } == 0)
    }

    @Test(arguments: ["basic", "whiteouts", "formats"])
    func everyFileReadInOddChunks(_ name: String) throws {
        let dir = TemporaryDirectory()
        let root = try extracted(dir, name)
        let v = try view(dir, name)
        var checked = 0
        for id in 0..<Int32(v.nodeCount) where v.inode(of: id).type == .regular {
            let path = v.path(of: id).description
            let expected = try Data(contentsOf: URL(fileURLWithPath: root + "/" + path))
            var got = Data()
            var offset: Int64 = 0
            while true {
                let chunk = try read(v, path, at: offset, count: 333)
                if chunk.isEmpty { break }
                got += chunk
                offset += Int64(chunk.count)
            }
            #expect(got == expected, "\(path)")
            checked += 1
        }
        #expect(checked > 3)
    }
}

import Synchronization
import TestSupport
