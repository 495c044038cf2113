import CZlib
import Basics
import Archive

/// The merged tree in flat arrays, with every string in one byte blob: cheap to keep for
/// hundreds of thousands of files, searchable without building a String, and stored in the
/// index cache as the arrays' bytes, so that opening a view with a warm cache is a file read.
///
/// Nodes are numbered breadth-first with the root at 0, so a directory's children are one
/// contiguous range, sorted by name (byte order).
struct ViewStorage {
    struct NodeRecord {
        var nameStart: UInt32
        var nameLength: UInt32
        var parent: Int32
        var inode: Int32
        var firstChild: Int32
        var childCount: Int32
    }

    struct InodeRecord {
        var type: UInt8
        var implicit: UInt8
        var reserved: UInt16 = 0
        var mode: UInt32
        var uid: Int64
        var gid: Int64
        var size: Int64
        var mtime: Int64
        var mtimeNanoseconds: Int32
        var devMajor: UInt32
        var devMinor: UInt32
        var layer: Int32
        var dataOffset: Int64
        var linkCount: UInt32
        var linkStart: UInt32
        var linkLength: UInt32
        var xattrStart: UInt32
        var xattrCount: UInt32
    }

    struct XattrRecord {
        var nameStart: UInt32
        var nameLength: UInt32
        var valueStart: UInt32
        var valueLength: UInt32
    }

    var nodes: [NodeRecord] = []
    var inodes: [InodeRecord] = []
    var xattrs: [XattrRecord] = []
    var strings: [UInt8] = []

    /// Appends bytes to the blob and returns where they start.
    mutating func intern(_ s: ByteString) -> (UInt32, UInt32) {
        let start = UInt32(strings.count)
        s.withBytes { strings.append(contentsOf: $0) }
        return (start, UInt32(strings.count) - start)
    }

    mutating func intern(_ bytes: [UInt8]) -> (UInt32, UInt32) {
        let start = UInt32(strings.count)
        strings.append(contentsOf: bytes)
        return (start, UInt32(strings.count) - start)
    }

    func bytes(_ start: UInt32, _ length: UInt32) -> ByteString {
        ByteString(bytes: strings[Int(start)..<Int(start + length)])
    }

    // MARK: Encoding

    static let magic: [UInt8] = Array("UMOCIVW1".utf8)
    /// 2: names are bytes as the layers have them (1 held them decoded as UTF-8).
    /// 3: xattr names too (2 decoded them as UTF-8).
    static let version: UInt32 = 3

    /// magic, version, the record sizes (a build with other layouts rebuilds), the counts, the
    /// arrays' bytes, then a CRC-32 of everything before it.
    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + nodes.count * MemoryLayout<NodeRecord>.stride
            + inodes.count * MemoryLayout<InodeRecord>.stride + xattrs.count * MemoryLayout<XattrRecord>.stride + strings.count)
        out.append(contentsOf: ViewStorage.magic)
        for v in ViewStorage.header(nodes.count, inodes.count, xattrs.count, strings.count) {
            withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
        }
        nodes.withUnsafeBytes { out.append(contentsOf: $0) }
        inodes.withUnsafeBytes { out.append(contentsOf: $0) }
        xattrs.withUnsafeBytes { out.append(contentsOf: $0) }
        out.append(contentsOf: strings)
        let crc = out.withUnsafeBytes { UInt32(crc32_z(0, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.count)) }
        withUnsafeBytes(of: crc.littleEndian) { out.append(contentsOf: $0) }
        return out
    }

    static func header(_ n: Int, _ i: Int, _ x: Int, _ s: Int) -> [UInt64] {
        [UInt64(version), UInt64(MemoryLayout<NodeRecord>.stride), UInt64(MemoryLayout<InodeRecord>.stride),
         UInt64(MemoryLayout<XattrRecord>.stride), UInt64(n), UInt64(i), UInt64(x), UInt64(s)]
    }

    /// nil for anything but a whole file of this version and layout.
    static func decode(_ bytes: [UInt8]) -> ViewStorage? {
        let headerSize = magic.count + 8 * 8
        guard bytes.count >= headerSize + 4, Array(bytes.prefix(magic.count)) == magic else { return nil }
        return bytes.withUnsafeBytes { raw -> ViewStorage? in
            let body = raw.count - 4
            let crc = UInt32(crc32_z(0, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), body))
            guard crc == UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: body, as: UInt32.self)) else { return nil }
            var fields: [UInt64] = []
            for k in 0..<8 {
                fields.append(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: magic.count + 8 * k, as: UInt64.self)))
            }
            guard Array(fields[0..<4]) == Array(header(0, 0, 0, 0)[0..<4]) else { return nil }
            let counts = fields[4..<8].map { Int(clamping: $0) }
            var offset = headerSize
            func take<T>(_ type: T.Type, _ count: Int) -> [T]? {
                let size = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
                guard !size.overflow, offset + size.partialValue <= body else { return nil }
                let array = [T](unsafeUninitializedCapacity: count) { buffer, initialized in
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(
                        from: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + size.partialValue)]))
                    initialized = count
                }
                offset += size.partialValue
                return array
            }
            guard let n = take(NodeRecord.self, counts[0]), let i = take(InodeRecord.self, counts[1]),
                  let x = take(XattrRecord.self, counts[2]), let s = take(UInt8.self, counts[3]), offset == body else { return nil }
            let storage = ViewStorage(nodes: n, inodes: i, xattrs: x, strings: s)
            return storage.isConsistent() ? storage : nil
        }
    }

    /// Every index in range, so that a damaged file that passed the checksum cannot crash a reader.
    func isConsistent() -> Bool {
        let n = Int32(nodes.count), i = Int32(inodes.count), s = UInt64(strings.count)
        guard n > 0 else { return false }
        for node in nodes {
            guard node.parent >= 0, node.parent < n, node.inode >= 0, node.inode < i, node.firstChild >= 0,
                  node.childCount >= 0, Int64(node.firstChild) + Int64(node.childCount) <= Int64(n),
                  UInt64(node.nameStart) + UInt64(node.nameLength) <= s else { return false }
        }
        for inode in inodes {
            guard TarEntryType(rawValue: inode.type) != nil, UInt64(inode.linkStart) + UInt64(inode.linkLength) <= s,
                  UInt64(inode.xattrStart) + UInt64(inode.xattrCount) <= UInt64(xattrs.count) else { return false }
        }
        for x in xattrs {
            guard UInt64(x.nameStart) + UInt64(x.nameLength) <= s, UInt64(x.valueStart) + UInt64(x.valueLength) <= s else { return false }
        }
        return true
    }
}
