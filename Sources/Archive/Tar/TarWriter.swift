/// Tar header encoding, byte for byte like Go's archive/tar `Writer.WriteHeader` with the format
/// left unspecified (what umoci uses):
/// - plain ustar when every value fits (a name over 100 bytes is split into prefix + name at a
///   '/' when possible);
/// - otherwise a PAX extended header ('x', named `dir/PaxHeaders.0/base`, mode/uid/gid/mtime 0)
///   carrying the values ustar cannot hold, records sorted by key, followed by a ustar header in
///   which such values are zero / truncated ASCII, exactly as Go writes it;
/// - the mtime is rounded to the nearest second (Go's `ModTime.Round(time.Second)`: half a second
///   rounds up) unless `keepSubsecondMtime`, which behaves like Go with `Format = FormatPAX`:
///   a non-zero fraction forces a PAX `mtime` record ("sec.nnnnnnnnn", trailing zeros trimmed);
/// - xattrs always go in PAX `SCHILY.xattr.NAME` records.
///
/// One deliberate difference: a device number above 0o7777777 (which makes Go fall back to the
/// GNU format) is written base-256 in the ustar/PAX header, which GNU tar and Go both read.
public enum TarWriter {
    /// Header block(s) for an entry, followed by `entry.size` data bytes (regular files only)
    /// and `padding(forSize:)` zero bytes. Deterministic.
    public static func header(for entry: TarEntry, keepSubsecondMtime: Bool = false) throws(TarError) -> [UInt8] {
        func fail(_ reason: String) -> TarError { TarError(offset: 0, reason: "cannot encode tar header for \(entry.name): \(reason)") }

        switch entry.type {
        case .regular, .characterDevice, .blockDevice, .fifo:
            if entry.name.last == UInt8(ascii: "/") { throw fail("filename may not have trailing slash") }
        default:
            break
        }
        let size: Int64 = entry.type == .regular ? entry.size : 0
        if size < 0 { throw fail("negative size") }

        // Normalise the time, then apply Go's rounding when the format is unspecified.
        var mtime = entry.mtime
        var nanos = Int64(entry.mtimeNanoseconds)
        if nanos < 0 || nanos >= 1_000_000_000 {
            mtime += nanos / 1_000_000_000
            nanos %= 1_000_000_000
            if nanos < 0 { nanos += 1_000_000_000; mtime -= 1 }
        }
        if !keepSubsecondMtime {
            if nanos >= 500_000_000 { mtime += 1 }
            nanos = 0
        }

        let name = entry.name.bytes
        let link = entry.linkName.bytes
        let uname = Array(entry.uname.utf8)
        let gname = Array(entry.gname.utf8)

        var records: [(key: [UInt8], value: [UInt8])] = []
        var ustarOK = true
        var preferPAX = false

        // Go's verifyString.
        if !isASCII(name) || name.count > 100 {
            if splitUSTARPath(name) == nil { ustarOK = false }
            records.append((Array("path".utf8), name))
        }
        if !isASCII(link) || link.count > 100 {
            ustarOK = false
            records.append((Array("linkpath".utf8), link))
        }
        if !isASCII(uname) || uname.count > 32 {
            ustarOK = false
            records.append((Array("uname".utf8), uname))
        }
        if !isASCII(gname) || gname.count > 32 {
            ustarOK = false
            records.append((Array("gname".utf8), gname))
        }
        // Go's verifyNumeric.
        if !fitsInOctal(8, entry.uid) {
            ustarOK = false
            records.append((Array("uid".utf8), Array(String(entry.uid).utf8)))
        }
        if !fitsInOctal(8, entry.gid) {
            ustarOK = false
            records.append((Array("gid".utf8), Array(String(entry.gid).utf8)))
        }
        if !fitsInOctal(12, size) {
            ustarOK = false
            records.append((Array("size".utf8), Array(String(size).utf8)))
        }
        // Go's verifyTime.
        let mtimeFits = fitsInOctal(12, mtime)
        if !mtimeFits { ustarOK = false }
        if !mtimeFits || nanos != 0 {
            preferPAX = true
            records.append((Array("mtime".utf8), Array(formatPAXTime(mtime, nanos).utf8)))
        }
        for x in entry.xattrs {
            records.append((Array("SCHILY.xattr.".utf8) + x.name.bytes, x.value))
        }

        let usePAX = !ustarOK || preferPAX || !entry.xattrs.isEmpty
        var out: [UInt8] = []
        if usePAX {
            // Sorted by key bytes (Go sorts its map keys); a repeated xattr name keeps the last value.
            var byKey: [[UInt8]: [UInt8]] = [:]
            for r in records { byKey[r.key] = r.value }
            let keys = byKey.keys.sorted { $0.lexicographicallyPrecedes($1) }
            var data: [UInt8] = []
            for k in keys {
                let v = byKey[k]!
                guard !k.contains(UInt8(ascii: "=")), !k.contains(0) else {
                    throw fail("invalid PAX key \(String(decoding: k, as: UTF8.self))")
                }
                let isString = ["path", "linkpath", "uname", "gname"].contains { k.elementsEqual($0.utf8) }
                if isString && v.contains(0) { throw fail("NUL in \(String(decoding: k, as: UTF8.self))") }
                appendPAXRecord(&data, key: k, value: v)
            }
            if data.count > TarLayout.maxSpecialFileSize { throw fail("PAX header larger than 1 MiB") }

            var pax = [UInt8](repeating: 0, count: TarLayout.blockSize)
            var paxName = toASCII(paxHeaderName(name))
            if paxName.count > 100 { paxName.removeSubrange(100...) }
            while paxName.last == UInt8(ascii: "/") { paxName.removeLast() }
            formatString(&pax, TarLayout.name, paxName)
            formatOctal(&pax, TarLayout.mode, 0)
            formatOctal(&pax, TarLayout.uid, 0)
            formatOctal(&pax, TarLayout.gid, 0)
            formatOctal(&pax, TarLayout.size, Int64(data.count))
            formatOctal(&pax, TarLayout.mtime, 0)
            pax[TarLayout.typeflag] = UInt8(ascii: "x")
            setUSTARMagicAndChecksum(&pax)
            out.reserveCapacity(2 * TarLayout.blockSize + data.count + padding(forSize: Int64(data.count)))
            out += pax
            out += data
            out += repeatElement(0, count: padding(forSize: Int64(data.count)))

            var blk = [UInt8](repeating: 0, count: TarLayout.blockSize)
            fillV7Plus(&blk, entry: entry, name: toASCII(name), link: toASCII(link), uname: toASCII(uname),
                       gname: toASCII(gname), size: size, mtime: mtime)
            setUSTARMagicAndChecksum(&blk)
            out += blk
        } else {
            var blk = [UInt8](repeating: 0, count: TarLayout.blockSize)
            var shortName = name
            var prefix: [UInt8] = []
            if let (p, s) = splitUSTARPath(name) { (prefix, shortName) = (p, s) }
            fillV7Plus(&blk, entry: entry, name: shortName, link: link, uname: uname, gname: gname,
                       size: size, mtime: mtime)
            formatString(&blk, TarLayout.prefix, prefix)
            setUSTARMagicAndChecksum(&blk)
            out = blk
        }
        return out
    }

    /// Zero bytes after `size` bytes of data, up to the next 512-byte boundary.
    public static func padding(forSize size: Int64) -> Int {
        Int((512 - size % 512) % 512)
    }

    /// Two zero blocks.
    public static let endOfArchive: [UInt8] = [UInt8](repeating: 0, count: 1024)

    // MARK: - Go's formatter

    private static func fillV7Plus(_ b: inout [UInt8], entry: TarEntry, name: [UInt8], link: [UInt8],
                                   uname: [UInt8], gname: [UInt8], size: Int64, mtime: Int64) {
        b[TarLayout.typeflag] = entry.type.rawValue
        formatString(&b, TarLayout.name, name)
        formatString(&b, TarLayout.linkName, link)
        formatOctal(&b, TarLayout.mode, Int64(entry.mode & 0o7777))
        formatOctal(&b, TarLayout.uid, entry.uid)
        formatOctal(&b, TarLayout.gid, entry.gid)
        formatOctal(&b, TarLayout.size, size)
        formatOctal(&b, TarLayout.mtime, mtime)
        formatString(&b, TarLayout.uname, uname)
        formatString(&b, TarLayout.gname, gname)
        formatNumeric(&b, TarLayout.devMajor, Int64(entry.devMajor))
        formatNumeric(&b, TarLayout.devMinor, Int64(entry.devMinor))
    }

    /// Copies `s` into the field, NUL-terminated when shorter. When a too-long value would leave
    /// a trailing '/' in the field, the slashes are replaced by NUL (Go does this so that readers
    /// do not mistake a file for a directory).
    static func formatString(_ b: inout [UInt8], _ r: Range<Int>, _ s: [UInt8]) {
        let n = min(s.count, r.count)
        for k in 0 ..< n { b[r.lowerBound + k] = s[k] }
        if s.count < r.count { b[r.lowerBound + s.count] = 0 }
        if s.count > r.count && b[r.upperBound - 1] == UInt8(ascii: "/") {
            var m = r.count - 1
            while m > 0 && s[m - 1] == UInt8(ascii: "/") { m -= 1 }
            b[r.lowerBound + m] = 0
        }
    }

    /// Zero-padded octal leaving room for a trailing NUL ("%07o\0" for an 8-byte field); a value
    /// that does not fit is written as 0 (callers have put it in a PAX record).
    static func formatOctal(_ b: inout [UInt8], _ r: Range<Int>, _ value: Int64) {
        let x = fitsInOctal(r.count, value) ? value : 0
        var digits = Array(String(x, radix: 8).utf8)
        let pad = r.count - digits.count - 1
        if pad > 0 { digits.insert(contentsOf: repeatElement(UInt8(ascii: "0"), count: pad), at: 0) }
        formatString(&b, r, digits)
    }

    /// Octal when it fits, else base-256 (two's complement, high bit of the first byte set).
    static func formatNumeric(_ b: inout [UInt8], _ r: Range<Int>, _ value: Int64) {
        if fitsInOctal(r.count, value) { return formatOctal(&b, r, value) }
        var x = value
        for k in r.reversed() {
            b[k] = UInt8(truncatingIfNeeded: x)
            x >>= 8
        }
        b[r.lowerBound] |= 0x80
    }

    static func fitsInOctal(_ width: Int, _ x: Int64) -> Bool {
        let bits = (width - 1) * 3
        return x >= 0 && (width >= 22 || x < Int64(1) << bits)
    }

    private static func setUSTARMagicAndChecksum(_ b: inout [UInt8]) {
        for (k, c) in "ustar\u{0}00".utf8.enumerated() { b[TarLayout.magic.lowerBound + k] = c }
        // The checksum field counts as eight spaces.
        for k in TarLayout.checksum { b[k] = 0x20 }
        let sum = b.withUnsafeBytes { raw in
            var sum = 0
            for k in 0 ..< TarLayout.blockSize { sum &+= Int(raw[k]) }
            return sum
        }
        formatOctal(&b, 148 ..< 155, Int64(sum))
        b[155] = UInt8(ascii: " ")
    }

    static func isASCII(_ s: [UInt8]) -> Bool { !s.contains { $0 >= 0x80 } }

    /// Go's toASCII: drops every non-ASCII character and NUL.
    static func toASCII(_ s: [UInt8]) -> [UInt8] {
        isASCII(s) ? s : s.filter { $0 < 0x80 && $0 != 0 }
    }

    /// Go's splitUSTARPath: (prefix ≤ 155, name ≤ 100) split at a '/', for ASCII names over 100 bytes.
    static func splitUSTARPath(_ name: [UInt8]) -> (prefix: [UInt8], suffix: [UInt8])? {
        var length = name.count
        if length <= 100 || !isASCII(name) { return nil }
        if length > 156 {
            length = 156
        } else if name[length - 1] == UInt8(ascii: "/") {
            length -= 1
        }
        guard let i = name[..<length].lastIndex(of: UInt8(ascii: "/")) else { return nil }
        let nlen = name.count - i - 1
        if i <= 0 || nlen > 100 || nlen == 0 || i > 155 { return nil }
        return (Array(name[..<i]), Array(name[(i + 1)...]))
    }

    /// Go's `path.Join(dir, "PaxHeaders.0", file)` with `dir, file := path.Split(name)`.
    static func paxHeaderName(_ name: [UInt8]) -> [UInt8] {
        let slash = name.lastIndex(of: UInt8(ascii: "/"))
        let dir = slash.map { Array(name[...$0]) } ?? []
        let file = slash.map { Array(name[($0 + 1)...]) } ?? name
        let elements = [dir, Array("PaxHeaders.0".utf8), file]
        guard let first = elements.firstIndex(where: { !$0.isEmpty }) else { return [] }
        var joined: [UInt8] = []
        for (k, e) in elements[first...].enumerated() {
            if k > 0 { joined.append(UInt8(ascii: "/")) }
            joined += e
        }
        return cleanPath(joined)
    }

    /// Go's path.Clean.
    static func cleanPath(_ path: [UInt8]) -> [UInt8] {
        let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
        if path.isEmpty { return [dot] }
        let rooted = path[0] == slash
        let n = path.count
        var out: [UInt8] = []
        var r = 0, dotdot = 0
        if rooted { out.append(slash); r = 1; dotdot = 1 }
        while r < n {
            if path[r] == slash {
                r += 1
            } else if path[r] == dot && (r + 1 == n || path[r + 1] == slash) {
                r += 1
            } else if path[r] == dot && r + 1 < n && path[r + 1] == dot && (r + 2 == n || path[r + 2] == slash) {
                r += 2
                if out.count > dotdot {
                    out.removeLast()
                    while out.count > dotdot && out[out.count - 1] != slash { out.removeLast() }
                } else if !rooted {
                    if !out.isEmpty { out.append(slash) }
                    out += [dot, dot]
                    dotdot = out.count
                }
            } else {
                if (rooted && out.count != 1) || (!rooted && !out.isEmpty) { out.append(slash) }
                while r < n && path[r] != slash { out.append(path[r]); r += 1 }
            }
        }
        return out.isEmpty ? [dot] : out
    }

    /// Go's formatPAXTime.
    static func formatPAXTime(_ seconds: Int64, _ nanos: Int64) -> String {
        if nanos == 0 { return String(seconds) }
        var secs = seconds, ns = nanos
        var sign = ""
        if secs < 0 {
            sign = "-"
            secs = -(secs + 1)
            ns = 1_000_000_000 - ns
        }
        var frac = String(ns)
        frac = String(repeating: "0", count: 9 - frac.count) + frac
        while frac.last == "0" { frac.removeLast() }
        return "\(sign)\(secs).\(frac)"
    }

    /// "%d %s=%s\n" where the length counts the whole record, itself included.
    static func appendPAXRecord(_ out: inout [UInt8], key: [UInt8], value: [UInt8]) {
        var size = key.count + value.count + 3
        size += String(size).utf8.count
        if String(size).utf8.count + key.count + value.count + 3 != size {
            size = String(size).utf8.count + key.count + value.count + 3
        }
        out += Array(String(size).utf8)
        out.append(UInt8(ascii: " "))
        out += key
        out.append(UInt8(ascii: "="))
        out += value
        out.append(UInt8(ascii: "\n"))
    }
}
