import CZlib
import Basics
import OCI
import Archive

/// Everything needed to serve a layer without extracting it: each tar entry's metadata and the
/// offset of its data in the uncompressed stream, plus (for gzip) the access points from which
/// inflating can resume. Built once by `LayerIndexer`, kept by `IndexCache`; the on-disk format
/// is described in docs/formats.md.
public struct LayerIndex: Sendable {
    public struct Entry: Sendable, Equatable {
        public var entry: TarEntry
        /// Offset of the entry's first data byte in the uncompressed stream.
        public var dataOffset: Int64
    }

    public var layer: Digest
    public var diffID: Digest
    public var compression: LayerCompression
    public var compressedSize: Int64
    public var uncompressedSize: Int64
    public var entries: [Entry]
    public var accessPoints: [GzipAccessPoint]

    /// Bumped whenever the encoding changes: an index of another version is rebuilt.
    /// 3: names and link targets are the archive's bytes (2 kept them decoded as UTF-8).
    /// 4: gzip access points are ISA-L inflate states, and the header names the ISA-L build
    ///    (`GzipInflation.identity`); an index of another build is rebuilt too.
    /// 5: the states are zstd-compressed (4 raw-deflated them).
    /// 6: xattr names are the archive's bytes (5 decoded them as UTF-8).
    public static let formatVersion: UInt32 = 6
    static let magic: [UInt8] = Array("UMOCIIDX".utf8)
}

extension LayerCompression {
    var code: UInt8 {
        switch self {
        case .none: return 0
        case .gzip: return 1
        case .zstd: return 2
        }
    }

    init?(code: UInt8) {
        switch code {
        case 0: self = .none
        case 1: self = .gzip
        case 2: self = .zstd
        default: return nil
        }
    }
}

extension LayerIndex {
    /// magic, version, the decoder that made the access points, payload (what reading needs
    /// first, then the entries), then a CRC-32 of everything before it.
    public func encoded() -> [UInt8] { encoded(decoder: GzipInflation.identity) }

    func encoded(decoder: String) -> [UInt8] {
        var w = BinaryWriter()
        let pointBytes = accessPoints.reduce(0) { $0 + $1.state.count + 16 }
        w.bytes.reserveCapacity(64 * entries.count + pointBytes + 256)
        w.bytes.append(contentsOf: LayerIndex.magic)
        w.u32(LayerIndex.formatVersion)
        w.string(decoder)
        w.string(layer.description)
        w.string(diffID.description)
        w.u8(compression.code)
        w.uvarint(UInt64(compressedSize))
        w.uvarint(UInt64(uncompressedSize))
        w.uvarint(UInt64(accessPoints.count))
        for p in accessPoints {
            w.uvarint(UInt64(p.uncompressedOffset))
            w.uvarint(UInt64(p.compressedOffset))
            w.data(p.state)
        }
        w.uvarint(UInt64(entries.count))
        for e in entries {
            let t = e.entry
            w.bytes(t.name)
            w.u8(t.type.rawValue)
            w.uvarint(UInt64(t.mode))
            w.varint(t.uid)
            w.varint(t.gid)
            w.string(t.uname)
            w.string(t.gname)
            w.uvarint(UInt64(t.size))
            w.varint(t.mtime)
            w.uvarint(UInt64(t.mtimeNanoseconds))
            w.bytes(t.linkName)
            w.uvarint(UInt64(t.devMajor))
            w.uvarint(UInt64(t.devMinor))
            w.uvarint(UInt64(t.xattrs.count))
            for x in t.xattrs {
                w.bytes(x.name)
                w.data(x.value)
            }
            w.uvarint(UInt64(e.dataOffset))
        }
        w.u32(crc(w.bytes[...]))
        return w.bytes
    }

    /// Decodes an index file; nil when it is not one this version wrote whole (wrong magic or
    /// version, truncated, checksum mismatch, malformed): the caller rebuilds it. Without
    /// `entries`, only what reading the layer needs (sizes and access points) is decoded.
    public static func decode(_ bytes: [UInt8], entries wantEntries: Bool = true) -> LayerIndex? {
        guard bytes.count > magic.count + 8, Array(bytes.prefix(magic.count)) == magic else { return nil }
        let body = bytes.count - 4
        let stored = bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: body, as: UInt32.self)) }
        guard crc(bytes[0..<body]) == stored else { return nil }
        return bytes.withUnsafeBytes { raw -> LayerIndex? in
            var r = BinaryReader(UnsafeRawBufferPointer(rebasing: raw[magic.count..<body]))
            do {
                guard try r.u32() == formatVersion, try r.string() == GzipInflation.identity else { return nil }
                guard let layer = try? Digest(parsing: try r.string()),
                      let diffID = try? Digest(parsing: try r.string()),
                      let compression = LayerCompression(code: try r.u8()) else { return nil }
                let compressedSize = try r.count()
                let uncompressedSize = try r.count()
                let pointCount = try r.count()
                guard pointCount <= Int64(body) else { return nil }
                var points: [GzipAccessPoint] = []
                points.reserveCapacity(Int(pointCount))
                for _ in 0..<pointCount {
                    let out = try r.count()
                    let inOffset = try r.count()
                    points.append(GzipAccessPoint(uncompressedOffset: out, compressedOffset: inOffset, state: try r.data()))
                }
                var entries: [Entry] = []
                let count = try r.count()
                guard count <= Int64(body) else { return nil }
                if wantEntries {
                    entries.reserveCapacity(Int(count))
                    for _ in 0..<count {
                        let name = try r.byteString()
                        guard let type = TarEntryType(rawValue: try r.u8()) else { return nil }
                        var t = TarEntry(name: name, type: type)
                        t.mode = UInt32(truncatingIfNeeded: try r.uvarint())
                        t.uid = try r.varint()
                        t.gid = try r.varint()
                        t.uname = try r.string()
                        t.gname = try r.string()
                        t.size = try r.count()
                        t.mtime = try r.varint()
                        t.mtimeNanoseconds = Int32(truncatingIfNeeded: try r.uvarint())
                        t.linkName = try r.byteString()
                        t.devMajor = UInt32(truncatingIfNeeded: try r.uvarint())
                        t.devMinor = UInt32(truncatingIfNeeded: try r.uvarint())
                        let xattrCount = try r.count()
                        guard xattrCount <= Int64(body) else { return nil }
                        for _ in 0..<xattrCount {
                            let xname = try r.byteString()
                            t.xattrs.append(Xattr(name: xname, value: try r.data()))
                        }
                        entries.append(Entry(entry: t, dataOffset: try r.count()))
                    }
                    guard r.isAtEnd else { return nil }
                }
                return LayerIndex(layer: layer, diffID: diffID, compression: compression, compressedSize: compressedSize,
                                  uncompressedSize: uncompressedSize, entries: entries, accessPoints: points)
            } catch {
                return nil
            }
        }
    }
}

/// CRC-32 (zlib's): the index is a cache on local disk, so the checksum guards against
/// truncation and damage, not against an attacker who can write the cache anyway.
func crc(_ bytes: ArraySlice<UInt8>) -> UInt32 {
    bytes.withUnsafeBufferPointer { UInt32(crc32_z(0, $0.baseAddress, $0.count)) }
}
