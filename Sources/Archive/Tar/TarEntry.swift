import Basics
/// The kinds of entries a layer archive can carry (tar typeflags). The metadata kinds (PAX 'x'/'g',
/// GNU 'L'/'K') never surface: the scanner folds them into the entry they describe.
public enum TarEntryType: UInt8, Sendable {
    case regular = 0x30          // '0' (also read from '\0' and '7')
    case hardlink = 0x31         // '1'
    case symlink = 0x32          // '2'
    case characterDevice = 0x33  // '3'
    case blockDevice = 0x34      // '4'
    case directory = 0x35        // '5'
    case fifo = 0x36             // '6'
}


/// The metadata of one archive member, after every extended header (PAX, GNU long name/link)
/// has been applied.
public struct TarEntry: Sendable, Equatable {
    /// As stored (after PAX `path` / GNU 'L' long name), NOT cleaned: the header's bytes,
    /// whatever their encoding.
    public var name: ByteString
    public var type: TarEntryType
    /// Permission bits plus setuid/setgid/sticky (`& 0o7777`).
    public var mode: UInt32
    public var uid: Int64
    public var gid: Int64
    public var uname: String
    public var gname: String
    /// Size of the data that follows the header; 0 for anything but regular files.
    public var size: Int64
    /// Seconds since the epoch.
    public var mtime: Int64
    /// 0..<1_000_000_000, only non-zero when a PAX `mtime` record carried a fraction.
    public var mtimeNanoseconds: Int32
    /// Hardlink target or symlink target (PAX `linkpath` / GNU 'K').
    public var linkName: ByteString
    public var devMajor: UInt32
    public var devMinor: UInt32
    /// `SCHILY.xattr.*` records in archive order.
    public var xattrs: [Xattr]

    public init(name: ByteString, type: TarEntryType, mode: UInt32 = 0o644, uid: Int64 = 0, gid: Int64 = 0,
                size: Int64 = 0, mtime: Int64 = 0) {
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.uname = ""
        self.gname = ""
        self.size = size
        self.mtime = mtime
        self.mtimeNanoseconds = 0
        self.linkName = ""
        self.devMajor = 0
        self.devMinor = 0
        self.xattrs = []
    }
}

/// A malformed or unsupported archive (or an entry the writer cannot encode).
public struct TarError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Offset, in the uncompressed stream, of the header block at fault (0 for writer errors).
    public var offset: Int64
    public var reason: String
    public init(offset: Int64, reason: String) {
        self.offset = offset
        self.reason = reason
    }
    public var description: String { "\(reason) at byte offset \(offset)" }
}

/// An entry found by `TarScanner`, with where it lives in the uncompressed stream.
public struct ScannedEntry: Sendable {
    public var entry: TarEntry
    /// Offset of the first header block of the entry: its PAX 'x' / GNU 'L' / 'K' extended header
    /// when it has one, else its own ustar header. The entry's bytes are
    /// `headerOffset ..< dataOffset + size + padding`.
    public var headerOffset: Int64
    /// Offset of the entry's data (just after its own header block).
    public var dataOffset: Int64
    public init(entry: TarEntry, headerOffset: Int64, dataOffset: Int64) {
        self.entry = entry
        self.headerOffset = headerOffset
        self.dataOffset = dataOffset
    }
}

/// Byte layout of a 512-byte tar header block (shared by the reader and the writer).
enum TarLayout {
    static let blockSize = 512
    static let name = 0..<100
    static let mode = 100..<108
    static let uid = 108..<116
    static let gid = 116..<124
    static let size = 124..<136
    static let mtime = 136..<148
    static let checksum = 148..<156
    static let typeflag = 156
    static let linkName = 157..<257
    static let magic = 257..<263
    static let version = 263..<265
    static let uname = 265..<297
    static let gname = 297..<329
    static let devMajor = 329..<337
    static let devMinor = 337..<345
    static let prefix = 345..<500
    static let starPrefix = 345..<476
    static let starTrailer = 508..<512
    /// Largest PAX / GNU long-name body accepted or written (Go's maxSpecialFileSize).
    static let maxSpecialFileSize = 1 << 20
}
