import Basics
/// Little helpers for the layer index's binary format (docs/formats.md): LEB128 varints,
/// zigzag for signed values, length-prefixed strings and byte strings. The reader checks every
/// bound and reports a malformed file as an error, never a crash.
struct BinaryWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }

    mutating func u32(_ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func u64(_ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func uvarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func varint(_ v: Int64) { uvarint(UInt64(bitPattern: (v << 1) ^ (v >> 63))) }

    mutating func data(_ d: [UInt8]) {
        uvarint(UInt64(d.count))
        bytes.append(contentsOf: d)
    }

    mutating func bytes(_ s: ByteString) {
        s.withBytes { buf in
            uvarint(UInt64(buf.count))
            bytes.append(contentsOf: buf)
        }
    }

    mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { buf in
            uvarint(UInt64(buf.count))
            bytes.append(contentsOf: buf)
        }
    }
}

struct BinaryReader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    struct Malformed: Error {}

    var isAtEnd: Bool { position == bytes.count }

    mutating func u8() throws(Malformed) -> UInt8 {
        guard position < bytes.count else { throw Malformed() }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u32() throws(Malformed) -> UInt32 {
        guard position + 4 <= bytes.count else { throw Malformed() }
        defer { position += 4 }
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self))
    }

    mutating func u64() throws(Malformed) -> UInt64 {
        guard position + 8 <= bytes.count else { throw Malformed() }
        defer { position += 8 }
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self))
    }

    mutating func uvarint() throws(Malformed) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            guard shift < 64 else { throw Malformed() }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
        }
    }

    /// A non-negative value that fits an Int64.
    mutating func count() throws(Malformed) -> Int64 {
        let v = try uvarint()
        guard v <= UInt64(Int64.max) else { throw Malformed() }
        return Int64(v)
    }

    mutating func varint() throws(Malformed) -> Int64 {
        let u = try uvarint()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }

    mutating func span() throws(Malformed) -> UnsafeRawBufferPointer {
        let n = try uvarint()
        guard n <= UInt64(bytes.count - position) else { throw Malformed() }
        defer { position += Int(n) }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + Int(n))])
    }

    mutating func data() throws(Malformed) -> [UInt8] { Array(try span()) }

    mutating func byteString() throws(Malformed) -> ByteString {
        ByteString(bytes: try span())
    }

    mutating func string() throws(Malformed) -> String {
        String(decoding: try span(), as: UTF8.self)
    }
}
