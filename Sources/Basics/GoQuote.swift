/// Strings quoted as Go quotes them: encoding/json's escaping (which is also what `%q` shows
/// for the text this tool quotes), for JSON output and for messages that must show exactly
/// what was given.
package enum GoQuote {
    static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// `s` as a JSON string literal, escaped as Go's encoding/json escapes it.
    package static func write(_ s: String, into out: inout [UInt8]) {
        out.append(0x22)
        let utf8 = Array(s.utf8)
        var i = 0
        let n = utf8.count
        while i < n {
            let b = utf8[i]
            switch b {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x3C, 0x3E, 0x26, 0x00..<0x20:
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 0xF)]])
            case 0xE2 where i + 2 < n && utf8[i + 1] == 0x80 && (utf8[i + 2] == 0xA8 || utf8[i + 2] == 0xA9):
                // U+2028 and U+2029, which Go escapes.
                out.append(contentsOf: "\\u202".utf8)
                out.append(utf8[i + 2] == 0xA8 ? UInt8(ascii: "8") : UInt8(ascii: "9"))
                i += 2
            default: out.append(b)
            }
            i += 1
        }
        out.append(0x22)
    }
}

extension String.StringInterpolation {
    /// A value quoted as Go's %q would, for error messages that must show exactly what was given.
    package mutating func appendInterpolation(quoted value: String) {
        var out: [UInt8] = []
        GoQuote.write(value, into: &out)
        appendLiteral(String(decoding: out, as: UTF8.self))
    }
}
