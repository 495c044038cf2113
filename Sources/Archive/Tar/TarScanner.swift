import Basics
/// Push parser over an uncompressed tar stream fed in arbitrary chunks.
///
/// Follows Go's archive/tar reader (what umoci uses) on every point that decides which entries an
/// archive holds and where their data lies:
/// - ustar ("ustar\0"), old GNU ("ustar  \0"), star and v7 headers; checksum accepted as the
///   unsigned or the signed byte sum;
/// - numeric fields in octal (leading/trailing spaces and NULs allowed) or base-256;
/// - PAX 'x' records (path, linkpath, size, uid, gid, uname, gname, mtime, SCHILY.xattr.*; a later
///   'x' before the same entry replaces an earlier one; empty values keep the header's value),
///   PAX 'g' global headers skipped, GNU 'L' / 'K' long names (applied after PAX, as Go does);
/// - typeflag '\0' is a regular file, or a directory when the name ends in '/'; '7' is regular;
/// - header-only types (hardlink, symlink, devices, directory, fifo) have no data section whatever
///   their size field says (Go's `isHeaderOnlyType`): the next header follows immediately;
/// - other unknown typeflags are errors ("unknown typeflag", umoci's words);
/// - two zero blocks end the archive (anything after is ignored); a zero block followed by a
///   non-zero block is an error; a zero block followed by end of input is a valid end.
///
/// Stricter than Go on purpose: GNU sparse files ('S' or PAX `GNU.sparse.*`), multi-volume 'M'
/// and volume 'V' headers are errors, as are sizes above 2^62 and extended headers with no entry
/// after them.
///
/// Data is never copied: the scanner only counts the bytes of file data it skips. A header block
/// is parsed in place from the caller's buffer, and copied into a 512-byte buffer only when it
/// straddles two chunks. PAX / GNU long-name bodies (at most 1 MiB) are the only data buffered.
public struct TarScanner {
    private enum Phase {
        /// At a header boundary (possibly with a partial header in `block`).
        case header
        /// One zero block seen: the next block must be zero (end) or the input must end.
        case afterZero
        /// Skipping `dataRemaining` bytes of entry data, then `padRemaining` bytes of padding.
        case data
        /// Collecting the body of an extended header into `meta`.
        case meta
        /// End of archive reached; everything after is ignored.
        case end
    }

    private enum MetaKind { case pax, longName, longLink }

    /// Values from PAX 'x' records that override the next header's fields.
    private struct PaxOverrides {
        var path: ByteString?
        var linkPath: ByteString?
        var size: Int64?
        var uid: Int64?
        var gid: Int64?
        var uname: String?
        var gname: String?
        var mtime: (seconds: Int64, nanoseconds: Int32)?
        var xattrs: [Xattr] = []
    }

    private var phase: Phase = .header
    private var block: [UInt8] = [UInt8](repeating: 0, count: TarLayout.blockSize)
    private var blockFill = 0
    private var dataRemaining: Int64 = 0
    private var padRemaining: Int64 = 0
    /// Offset of the header whose data / body is being consumed (for error reports).
    private var currentHeaderOffset: Int64 = 0
    private var meta: [UInt8] = []
    private var metaKind: MetaKind = .pax

    // Extended-header state waiting for the entry it describes.
    private var pendingStart: Int64?
    private var pax: PaxOverrides?
    private var longName: ByteString?
    private var longLink: ByteString?

    private var entries: [ScannedEntry] = []
    private var offset: Int64 = 0

    public init() {}

    /// Two zero blocks (or a single zero block followed by end of input) seen; bytes after them
    /// are ignored.
    public var reachedEndOfArchive: Bool {
        switch phase {
        case .end: return true
        case .afterZero: return blockFill == 0
        default: return false
        }
    }

    /// Every byte handed to `consume`, including ignored bytes after the end of the archive.
    public var bytesConsumed: Int64 { offset }

    /// Returns and clears the entries completed so far.
    public mutating func takeEntries() -> [ScannedEntry] {
        let out = entries
        entries = []
        return out
    }

    public mutating func consume(_ bytes: UnsafeRawBufferPointer) throws(TarError) {
        let count = bytes.count
        var i = 0
        while i < count {
            switch phase {
            case .end:
                offset += Int64(count - i)
                return

            case .data:
                // Skipped, never copied.
                let available = Int64(count - i)
                if dataRemaining > 0 {
                    let k = min(available, dataRemaining)
                    dataRemaining -= k
                    i += Int(k)
                    offset += k
                } else {
                    let k = min(available, padRemaining)
                    padRemaining -= k
                    i += Int(k)
                    offset += k
                }
                if dataRemaining == 0 && padRemaining == 0 { phase = .header }

            case .meta:
                let k = Int(min(Int64(count - i), dataRemaining))
                meta.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i ..< i + k]))
                dataRemaining -= Int64(k)
                i += k
                offset += Int64(k)
                if dataRemaining == 0 {
                    try finishMeta()
                    phase = padRemaining > 0 ? .data : .header
                }

            case .header, .afterZero:
                if blockFill == 0 && count - i >= TarLayout.blockSize {
                    let at = offset
                    i += TarLayout.blockSize
                    offset += Int64(TarLayout.blockSize)
                    try handleBlock(UnsafeRawBufferPointer(rebasing: bytes[i - TarLayout.blockSize ..< i]), at: at)
                } else {
                    let k = min(TarLayout.blockSize - blockFill, count - i)
                    let fill = blockFill
                    block.withUnsafeMutableBytes { dst in
                        dst.baseAddress!.advanced(by: fill).copyMemory(from: bytes.baseAddress! + i, byteCount: k)
                    }
                    blockFill += k
                    i += k
                    offset += Int64(k)
                    if blockFill == TarLayout.blockSize {
                        blockFill = 0
                        let full = block  // shares storage; `block` is not written while `full` lives
                        let at = offset - Int64(TarLayout.blockSize)
                        var failure: TarError?
                        full.withUnsafeBytes { raw in
                            do throws(TarError) { try handleBlock(raw, at: at) } catch { failure = error }
                        }
                        if let failure { throw failure }
                    }
                }
            }
        }
    }

    /// End of input. Fine at a header boundary (with or without end-of-archive blocks) and inside
    /// the padding after complete data (umoci 0.4.7 on Debian writes layers that end so).
    public func finish() throws(TarError) {
        switch phase {
        case .end:
            return
        case .afterZero:
            // A truncated second zero block is still only zeros: accept it.
            if blockFill > 0 && block[0 ..< blockFill].contains(where: { $0 != 0 }) {
                throw TarError(offset: offset - Int64(blockFill), reason: "truncated tar header")
            }
        case .header:
            if blockFill > 0 {
                throw TarError(offset: offset - Int64(blockFill), reason: "truncated tar header")
            }
            try checkNoPending()
        case .data:
            if dataRemaining > 0 {
                throw TarError(offset: currentHeaderOffset,
                               reason: "tar stream truncated: \(dataRemaining) bytes of entry data missing")
            }
            try checkNoPending()
        case .meta:
            throw TarError(offset: currentHeaderOffset, reason: "tar stream truncated inside an extended header")
        }
    }

    public static func scan(_ bytes: [UInt8]) throws(TarError) -> [ScannedEntry] {
        var scanner = TarScanner()
        var failure: TarError?
        bytes.withUnsafeBytes { raw in
            do throws(TarError) { try scanner.consume(raw) } catch { failure = error }
        }
        if let failure { throw failure }
        try scanner.finish()
        return scanner.takeEntries()
    }

    // MARK: - Headers

    private func checkNoPending() throws(TarError) {
        if let start = pendingStart {
            throw TarError(offset: start, reason: "tar stream ends after an extended header without its entry")
        }
    }

    private mutating func handleBlock(_ p: UnsafeRawBufferPointer, at headerOffset: Int64) throws(TarError) {
        if Self.isZeroBlock(p) {
            if case .afterZero = phase {
                phase = .end
            } else {
                phase = .afterZero
            }
            return
        }
        if case .afterZero = phase {
            throw TarError(offset: headerOffset, reason: "non-zero tar header after a zero block")
        }
        func fail(_ reason: String) -> TarError { TarError(offset: headerOffset, reason: reason) }

        // Checksum: the field counts as eight spaces; old tars summed signed bytes.
        guard let stored = Self.parseOctal(p, TarLayout.checksum) else { throw fail("invalid tar header checksum field") }
        guard stored == Self.unsignedChecksum(p) || stored == Self.signedChecksum(p) else {
            throw fail("tar header checksum mismatch")
        }

        let flag = p[TarLayout.typeflag]
        currentHeaderOffset = headerOffset

        switch flag {
        case UInt8(ascii: "x"), UInt8(ascii: "L"), UInt8(ascii: "K"):
            let size = try Self.numeric(p, TarLayout.size, "size", headerOffset)
            guard size >= 0, size <= Int64(TarLayout.maxSpecialFileSize) else {
                throw fail("extended header size \(size) out of range")
            }
            if pendingStart == nil { pendingStart = headerOffset }
            metaKind = flag == UInt8(ascii: "x") ? .pax : (flag == UInt8(ascii: "L") ? .longName : .longLink)
            meta.removeAll(keepingCapacity: true)
            meta.reserveCapacity(Int(size))
            dataRemaining = size
            padRemaining = Int64(TarWriter.padding(forSize: size))
            if size == 0 {
                try finishMeta()
                phase = .header
            } else {
                phase = .meta
            }
            return
        case UInt8(ascii: "S"):
            throw fail("unsupported tar entry: GNU sparse file")
        case UInt8(ascii: "M"):
            throw fail("unsupported tar entry: GNU multi-volume continuation")
        case UInt8(ascii: "V"):
            throw fail("unsupported tar entry: GNU volume header")
        default:
            break
        }

        // Format, from the magic (as Go's block.getFormat).
        let magicIsUstar = Self.equals(p, TarLayout.magic, "ustar\0")
        let isStar = magicIsUstar && Self.equals(p, TarLayout.starTrailer, "tar\0")
        let isGNU = !magicIsUstar && Self.equals(p, TarLayout.magic, "ustar ")
            && Self.equals(p, TarLayout.version, " \0")
        let isV7 = !magicIsUstar && !isGNU

        var size = try Self.numeric(p, TarLayout.size, "size", headerOffset)
        let modeValue = try Self.numeric(p, TarLayout.mode, "mode", headerOffset)
        var uid = try Self.numeric(p, TarLayout.uid, "uid", headerOffset)
        var gid = try Self.numeric(p, TarLayout.gid, "gid", headerOffset)
        var mtime = try Self.numeric(p, TarLayout.mtime, "mtime", headerOffset)
        var devMajor: Int64 = 0, devMinor: Int64 = 0
        if !isV7 {
            devMajor = try Self.numeric(p, TarLayout.devMajor, "devmajor", headerOffset)
            devMinor = try Self.numeric(p, TarLayout.devMinor, "devminor", headerOffset)
        }

        if flag == UInt8(ascii: "g") {
            // Global PAX header: skipped. Like Go, it ends any pending extended state.
            try skipData(size: size, headerOffset: headerOffset)
            clearPending()
            return
        }

        let type: TarEntryType?
        switch flag {
        case 0x30, 0x37: type = .regular
        case 0: type = .regular  // may turn into a directory below, once the name is known
        case 0x31: type = .hardlink
        case 0x32: type = .symlink
        case 0x33: type = .characterDevice
        case 0x34: type = .blockDevice
        case 0x35: type = .directory
        case 0x36: type = .fifo
        default: type = nil
        }

        let overrides = pax
        if let s = overrides?.size { size = s }
        guard let type else {
            // A vendor extension ('A'...'Z': GNU dumpdir, volume header, ...) means something
            // this layer cannot be extracted without: umoci refuses it in the same words.
            let name = pax?.path ?? longName ?? Self.bytes(p, TarLayout.name)
            throw fail("unpack entry: \(name): unknown typeflag '\\x\(String(flag, radix: 16))'")
        }

        // Names: bytes, exactly as stored.
        var name = Self.bytes(p, TarLayout.name)
        if !isV7 && !isGNU {
            let prefix = Self.bytes(p, isStar ? TarLayout.starPrefix : TarLayout.prefix)
            if !prefix.isEmpty { name = prefix + "/" + name }
        }
        var linkName = Self.bytes(p, TarLayout.linkName)
        var uname = isV7 ? "" : Self.cString(p, TarLayout.uname)
        var gname = isV7 ? "" : Self.cString(p, TarLayout.gname)
        var nanoseconds: Int32 = 0
        var xattrs: [Xattr] = []
        if let o = overrides {
            if let v = o.path { name = v }
            if let v = o.linkPath { linkName = v }
            if let v = o.uname { uname = v }
            if let v = o.gname { gname = v }
            if let v = o.uid { uid = v }
            if let v = o.gid { gid = v }
            if let v = o.mtime { (mtime, nanoseconds) = (v.seconds, v.nanoseconds) }
            xattrs = o.xattrs
        }
        // As Go: an empty GNU long name / link keeps the header's value.
        if let v = longName, !v.isEmpty { name = v }
        if let v = longLink, !v.isEmpty { linkName = v }

        var entryType = type
        if flag == 0 && name.last == UInt8(ascii: "/") { entryType = .directory }

        var entry = TarEntry(name: name, type: entryType, mode: UInt32(truncatingIfNeeded: modeValue) & 0o7777,
                             uid: uid, gid: gid, size: 0, mtime: mtime)
        entry.uname = uname
        entry.gname = gname
        entry.mtimeNanoseconds = nanoseconds
        entry.linkName = linkName
        entry.devMajor = UInt32(truncatingIfNeeded: devMajor)
        entry.devMinor = UInt32(truncatingIfNeeded: devMinor)
        entry.xattrs = xattrs

        let start = pendingStart ?? headerOffset
        clearPending()
        if entryType == .regular {
            try Self.checkSize(size, headerOffset)
            entry.size = size
            entries.append(ScannedEntry(entry: entry, headerOffset: start, dataOffset: headerOffset + 512))
            try skipData(size: size, headerOffset: headerOffset)
        } else {
            // Header-only type: no data section, whatever the size field says (as Go).
            entries.append(ScannedEntry(entry: entry, headerOffset: start, dataOffset: headerOffset + 512))
            phase = .header
        }
    }

    private mutating func clearPending() {
        pendingStart = nil
        pax = nil
        longName = nil
        longLink = nil
    }

    private mutating func skipData(size: Int64, headerOffset: Int64) throws(TarError) {
        try Self.checkSize(size, headerOffset)
        dataRemaining = size
        padRemaining = Int64(TarWriter.padding(forSize: size))
        phase = size > 0 ? .data : .header
    }

    private static func checkSize(_ size: Int64, _ headerOffset: Int64) throws(TarError) {
        if size < 0 { throw TarError(offset: headerOffset, reason: "negative tar entry size \(size)") }
        if size > (1 << 62) { throw TarError(offset: headerOffset, reason: "impossible tar entry size \(size)") }
    }

    // MARK: - Extended headers

    private mutating func finishMeta() throws(TarError) {
        switch metaKind {
        case .pax:
            pax = try Self.parsePAX(meta, headerOffset: currentHeaderOffset)
        case .longName:
            longName = meta.withUnsafeBytes { Self.bytes($0, 0 ..< $0.count) }
        case .longLink:
            longLink = meta.withUnsafeBytes { Self.bytes($0, 0 ..< $0.count) }
        }
        if meta.count > 64 * 1024 { meta = [] } else { meta.removeAll(keepingCapacity: true) }
    }

    private static func parsePAX(_ buf: [UInt8], headerOffset: Int64) throws(TarError) -> PaxOverrides {
        func fail(_ reason: String) -> TarError { TarError(offset: headerOffset, reason: reason) }
        var out = PaxOverrides()
        let n = buf.count
        var i = 0
        while i < n {
            // Tolerate NUL padding after the last record.
            if buf[i] == 0, !buf[i...].contains(where: { $0 != 0 }) { break }
            // "%d %s=%s\n": the length counts the whole record, in bytes.
            var j = i
            var length = 0
            while j < n, buf[j] != UInt8(ascii: " ") {
                let d = Int(buf[j]) - 0x30
                guard d >= 0, d <= 9, length <= (Int.max - 9) / 10 else { throw fail("malformed PAX record length") }
                length = length * 10 + d
                j += 1
            }
            guard j > i, j < n, length >= 5, length <= n - i, length > j - i + 1 else {
                throw fail("malformed PAX record")
            }
            let end = i + length
            guard buf[end - 1] == UInt8(ascii: "\n") else { throw fail("malformed PAX record: no trailing newline") }
            let keyStart = j + 1
            guard let eq = buf[keyStart ..< end - 1].firstIndex(of: UInt8(ascii: "=")) else {
                throw fail("malformed PAX record: no '='")
            }
            let key = buf[keyStart ..< eq]
            let value = buf[eq + 1 ..< end - 1]
            guard !key.isEmpty, !key.contains(0) else { throw fail("malformed PAX record key") }
            i = end
            try apply(key: key, value: value, to: &out, fail)
        }
        return out
    }

    private static func apply(key: ArraySlice<UInt8>, value: ArraySlice<UInt8>, to out: inout PaxOverrides,
                              _ fail: (String) -> TarError) throws(TarError) {
        func string() -> String { String(decoding: value, as: UTF8.self) }
        func keyName() -> String { String(decoding: key, as: UTF8.self) }
        func stringNoNUL() throws(TarError) -> String {
            if value.contains(0) { throw fail("PAX record \(keyName()) contains NUL") }
            return string()
        }
        func bytesNoNUL() throws(TarError) -> ByteString {
            if value.contains(0) { throw fail("PAX record \(keyName()) contains NUL") }
            return ByteString(bytes: value)
        }
        func integer() throws(TarError) -> Int64 {
            guard let v = parseDecimal(value) else { throw fail("invalid PAX \(keyName()) value \"\(string())\"") }
            return v
        }
        let k = key
        if k.starts(with: "GNU.sparse.".utf8) {
            throw fail("unsupported tar entry: GNU sparse file (PAX \(keyName()))")
        }
        // Go's mergePAX: an empty value keeps the header's own value.
        if value.isEmpty { return }
        if k.elementsEqual("path".utf8) { out.path = try bytesNoNUL() }
        else if k.elementsEqual("linkpath".utf8) { out.linkPath = try bytesNoNUL() }
        else if k.elementsEqual("uname".utf8) { out.uname = try stringNoNUL() }
        else if k.elementsEqual("gname".utf8) { out.gname = try stringNoNUL() }
        else if k.elementsEqual("size".utf8) { out.size = try integer() }
        else if k.elementsEqual("uid".utf8) { out.uid = try integer() }
        else if k.elementsEqual("gid".utf8) { out.gid = try integer() }
        else if k.elementsEqual("mtime".utf8) {
            guard let t = parsePAXTime(value) else { throw fail("invalid PAX mtime value \"\(string())\"") }
            out.mtime = t
        } else if k.starts(with: "SCHILY.xattr.".utf8) {
            let name = ByteString(bytes: k.dropFirst(13))
            let bytes = Array(value)
            if let at = out.xattrs.firstIndex(where: { $0.name == name }) {
                out.xattrs[at].value = bytes  // repeated key: last wins, like Go's map
            } else {
                out.xattrs.append(Xattr(name: name, value: bytes))
            }
        }
        // atime, ctime, comment, charset, LIBARCHIVE.*, ...: ignored.
    }

    /// strconv.ParseInt(s, 10, 64): optional sign, decimal digits, no overflow.
    static func parseDecimal<C: Collection>(_ s: C) -> Int64? where C.Element == UInt8 {
        var it = s.makeIterator()
        guard var c = it.next() else { return nil }
        var negative = false
        if c == UInt8(ascii: "-") || c == UInt8(ascii: "+") {
            negative = c == UInt8(ascii: "-")
            guard let next = it.next() else { return nil }
            c = next
        }
        var magnitude: UInt64 = 0
        while true {
            let d = UInt64(c &- 0x30)
            guard d <= 9 else { return nil }
            let (m1, o1) = magnitude.multipliedReportingOverflow(by: 10)
            let (m2, o2) = m1.addingReportingOverflow(d)
            guard !o1, !o2 else { return nil }
            magnitude = m2
            guard let next = it.next() else { break }
            c = next
        }
        if negative {
            guard magnitude <= UInt64(Int64.max) + 1 else { return nil }
            return magnitude == UInt64(Int64.max) + 1 ? Int64.min : -Int64(magnitude)
        }
        guard magnitude <= UInt64(Int64.max) else { return nil }
        return Int64(magnitude)
    }

    /// Go's parsePAXTime: "sec[.frac]", fraction truncated to nanoseconds; a negative time counts
    /// the fraction backwards ("-1.5" is 1.5 s before the epoch). Result normalised to a
    /// non-negative nanosecond part.
    static func parsePAXTime(_ s: ArraySlice<UInt8>) -> (seconds: Int64, nanoseconds: Int32)? {
        let dot = s.firstIndex(of: UInt8(ascii: "."))
        let secPart = dot.map { s[s.startIndex ..< $0] } ?? s
        guard let secs = parseDecimal(secPart) else { return nil }
        guard let dot else { return (secs, 0) }
        let frac = s[(dot + 1)...]
        if frac.isEmpty { return (secs, 0) }
        var nanos: Int64 = 0
        var digits = 0
        for c in frac {
            guard c >= 0x30, c <= 0x39 else { return nil }
            if digits < 9 {
                nanos = nanos * 10 + Int64(c - 0x30)
                digits += 1
            }
        }
        while digits < 9 { nanos *= 10; digits += 1 }
        if secPart.first == UInt8(ascii: "-"), nanos > 0 {
            guard secs > Int64.min else { return nil }
            return (secs - 1, Int32(1_000_000_000 - nanos))
        }
        return (secs, Int32(nanos))
    }

    // MARK: - Field parsing

    private static func isZeroBlock(_ p: UnsafeRawBufferPointer) -> Bool {
        var acc: UInt64 = 0
        for k in stride(from: 0, to: TarLayout.blockSize, by: 8) {
            acc |= p.loadUnaligned(fromByteOffset: k, as: UInt64.self)
        }
        return acc == 0
    }

    /// Sum of the block's bytes with the checksum field counted as eight spaces.
    private static func unsignedChecksum(_ p: UnsafeRawBufferPointer) -> Int64 {
        var sum = 0
        for k in 0 ..< TarLayout.blockSize { sum &+= Int(p[k]) }
        for k in TarLayout.checksum { sum &-= Int(p[k]) }
        return Int64(sum + 8 * 0x20)
    }

    /// The same with bytes taken as signed (some old tars computed that).
    private static func signedChecksum(_ p: UnsafeRawBufferPointer) -> Int64 {
        var sum = 0
        for k in 0 ..< TarLayout.blockSize { sum &+= Int(Int8(bitPattern: p[k])) }
        for k in TarLayout.checksum { sum &-= Int(Int8(bitPattern: p[k])) }
        return Int64(sum + 8 * 0x20)
    }

    private static func equals(_ p: UnsafeRawBufferPointer, _ r: Range<Int>, _ s: StaticString) -> Bool {
        guard s.utf8CodeUnitCount == r.count else { return false }
        let q = s.utf8Start
        for k in 0 ..< r.count where p[r.lowerBound + k] != q[k] { return false }
        return true
    }

    /// The bytes of `r` up to the first NUL, as they are.
    static func bytes(_ p: UnsafeRawBufferPointer, _ r: Range<Int>) -> ByteString {
        var end = r.lowerBound
        while end < r.upperBound && p[end] != 0 { end += 1 }
        if end == r.lowerBound { return ByteString() }
        return ByteString(bytes: UnsafeRawBufferPointer(rebasing: p[r.lowerBound ..< end]))
    }

    /// The bytes of `r` up to the first NUL, as UTF-8 (user and group names).
    static func cString(_ p: UnsafeRawBufferPointer, _ r: Range<Int>) -> String {
        var end = r.lowerBound
        while end < r.upperBound && p[end] != 0 { end += 1 }
        if end == r.lowerBound { return "" }
        return String(decoding: UnsafeRawBufferPointer(rebasing: p[r.lowerBound ..< end]), as: UTF8.self)
    }

    private static func numeric(_ p: UnsafeRawBufferPointer, _ r: Range<Int>, _ field: String,
                                _ headerOffset: Int64) throws(TarError) -> Int64 {
        if let v = parseNumeric(p, r) { return v }
        throw TarError(offset: headerOffset, reason: "invalid tar header \(field) field")
    }

    /// Go's parseNumeric: base-256 (two's complement, first byte's high bit set) or octal.
    static func parseNumeric(_ p: UnsafeRawBufferPointer, _ r: Range<Int>) -> Int64? {
        let first = p[r.lowerBound]
        guard first & 0x80 != 0 else { return parseOctal(p, r) }
        let inv: UInt8 = first & 0x40 != 0 ? 0xff : 0
        var x: UInt64 = 0
        for k in r {
            var c = p[k] ^ inv
            if k == r.lowerBound { c &= 0x7f }
            if x >> 56 > 0 { return nil }
            x = x << 8 | UInt64(c)
        }
        if x >> 63 > 0 { return nil }
        return inv == 0xff ? ~Int64(x) : Int64(x)
    }

    /// Go's parseOctal: trim spaces and NULs on both ends, stop at a NUL, then octal digits only.
    static func parseOctal(_ p: UnsafeRawBufferPointer, _ r: Range<Int>) -> Int64? {
        var lo = r.lowerBound, hi = r.upperBound
        while lo < hi && (p[lo] == 0x20 || p[lo] == 0) { lo += 1 }
        while hi > lo && (p[hi - 1] == 0x20 || p[hi - 1] == 0) { hi -= 1 }
        var x: UInt64 = 0
        var k = lo
        while k < hi && p[k] != 0 {
            let d = p[k] &- 0x30
            guard d < 8, x >> 61 == 0 else { return nil }
            x = x << 3 | UInt64(d)
            k += 1
        }
        return Int64(bitPattern: x)
    }
}
