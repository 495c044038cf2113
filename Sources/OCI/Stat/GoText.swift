#if canImport(Glibc)
import Glibc
#endif

/// Text as Go's standard library writes it, for output that must equal umoci's byte for byte.
public enum GoText {
    /// `strconv.Quote`: double quotes, Go's escapes for `"` and `\`, `\a \b \f \n \r \t \v`,
    /// `\xHH` for other control characters, `\uHHHH` / `\UHHHHHHHH` for what `strconv.IsPrint`
    /// refuses; printable runes as they are.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default:
                if isPrint(u) {
                    out.unicodeScalars.append(u)
                    continue
                }
                switch u.value {
                case 0x07: out += "\\a"
                case 0x08: out += "\\b"
                case 0x0C: out += "\\f"
                case 0x0A: out += "\\n"
                case 0x0D: out += "\\r"
                case 0x09: out += "\\t"
                case 0x0B: out += "\\v"
                case let v where v < 0x20 || v == 0x7F: out += "\\x" + hex(v, 2)
                case let v where v < 0x10000: out += "\\u" + hex(v, 4)
                case let v: out += "\\U" + hex(v, 8)
                }
            }
        }
        return out + "\""
    }

    /// umoci's `quote(s, precise)` (umoci 0.6, utils.go): `s` as it is unless `strconv.Quote`
    /// would change it, or, when `precise`, it is empty or contains white space.
    public static func quoteIfNeeded(_ s: String, precise: Bool) -> String {
        let quoted = quote(s)
        let unchanged = quoted.unicodeScalars.count == s.unicodeScalars.count + 2
            && quoted.unicodeScalars.dropFirst().dropLast().elementsEqual(s.unicodeScalars)
        if !unchanged || (precise && (s.isEmpty || s.unicodeScalars.contains(where: isSpace))) {
            return quoted
        }
        return s
    }

    /// `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
    static func isPrint(_ u: Unicode.Scalar) -> Bool {
        if u.value < 0x80 { return (0x20...0x7E).contains(u.value) }
        switch u.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .nonspacingMark, .spacingMark, .enclosingMark,
             .decimalNumber, .letterNumber, .otherNumber,
             .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation,
             .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            return true
        default:
            return false
        }
    }

    /// `unicode.IsSpace`.
    static func isSpace(_ u: Unicode.Scalar) -> Bool {
        switch u.value {
        case 0x09...0x0D, 0x20, 0x85, 0xA0: return true
        case 0..<0x100: return false
        default: return u.properties.isWhitespace
        }
    }

    /// `unicode.IsGraphic` of a byte taken as a rune (Latin-1), as umoci's xxd dump tests it.
    static func isGraphicByte(_ b: UInt8) -> Bool {
        (0x20...0x7E).contains(b) || (b >= 0xA0 && b != 0xAD)
    }

    static func hex(_ value: UInt32, _ width: Int) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    /// go-units' `HumanSize`: decimal units (B, kB, MB, ...), `%.4g`.
    public static func humanSize(_ bytes: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1000, unit < units.count - 1 {
            value /= 1000
            unit += 1
        }
        var buffer = [CChar](repeating: 0, count: 64)
        _ = withVaList([value]) { vsnprintf(&buffer, buffer.count, "%.4g", $0) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + units[unit]
    }
}
