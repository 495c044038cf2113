// Serializes `JSON` the way Go's encoding/json does (umoci is written in Go): compact, or
// indented like json.MarshalIndent, with Go's string escaping (HTML characters and U+2028/9
// escaped). Object members are written in their stored order.

import Basics

extension JSON {
    /// Compact bytes, as Go's json.Marshal writes them.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        JSONWriter.write(self, into: &out, indent: nil, level: 0)
        return out
    }

    /// Indented bytes, as Go's json.MarshalIndent(v, "", indent) writes them (no trailing newline).
    public func serialized(indent: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512)
        JSONWriter.write(self, into: &out, indent: Array(indent.utf8), level: 0)
        return out
    }

    public var text: String { String(decoding: serialized(), as: UTF8.self) }
}

enum JSONWriter {
    static func newline(_ out: inout [UInt8], _ indent: [UInt8]?, _ level: Int) {
        guard let indent else { return }
        out.append(0x0A)
        for _ in 0..<level { out.append(contentsOf: indent) }
    }

    static func write(_ value: JSON, into out: inout [UInt8], indent: [UInt8]?, level: Int) {
        switch value {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n): out.append(contentsOf: n.utf8)
        case .string(let s): writeString(s, into: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            if a.isEmpty { out.append(UInt8(ascii: "]")); return }
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(&out, indent, level + 1)
                write(v, into: &out, indent: indent, level: level + 1)
            }
            newline(&out, indent, level)
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            if o.isEmpty { out.append(UInt8(ascii: "}")); return }
            for (i, m) in o.members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(&out, indent, level + 1)
                writeString(m.key, into: &out)
                out.append(UInt8(ascii: ":"))
                if indent != nil { out.append(0x20) }
                write(m.value, into: &out, indent: indent, level: level + 1)
            }
            newline(&out, indent, level)
            out.append(UInt8(ascii: "}"))
        }
    }

    static func writeString(_ s: String, into out: inout [UInt8]) { GoQuote.write(s, into: &out) }
}
