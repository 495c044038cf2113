import Basics

/// A `WWW-Authenticate` challenge (RFC 7235): its scheme and its parameters.
struct AuthChallenge: Equatable {
    var scheme: String
    var parameters: [String: String]

    /// Every challenge of a header value, e.g. `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"`.
    static func parse(_ header: String) -> [AuthChallenge] {
        var challenges: [AuthChallenge] = []
        let s = Array(header.utf8)
        var i = 0
        func skipSpace() { while i < s.count, s[i] == 0x20 || s[i] == 0x09 { i += 1 } }
        func token() -> String {
            let start = i
            while i < s.count, s[i] != 0x20, s[i] != 0x09, s[i] != UInt8(ascii: "="), s[i] != UInt8(ascii: ",") { i += 1 }
            return String(decoding: s[start..<i], as: UTF8.self)
        }
        while i < s.count {
            skipSpace()
            while i < s.count, s[i] == UInt8(ascii: ",") { i += 1; skipSpace() }
            let scheme = token()
            guard !scheme.isEmpty else { break }
            var params: [String: String] = [:]
            while true {
                skipSpace()
                let save = i
                let name = token()
                skipSpace()
                guard !name.isEmpty, i < s.count, s[i] == UInt8(ascii: "=") else { i = save; break }
                i += 1
                skipSpace()
                var value: [UInt8] = []
                if i < s.count, s[i] == UInt8(ascii: "\"") {
                    i += 1
                    while i < s.count, s[i] != UInt8(ascii: "\"") {
                        if s[i] == UInt8(ascii: "\\"), i + 1 < s.count { i += 1 }
                        value.append(s[i])
                        i += 1
                    }
                    i += 1
                } else {
                    while i < s.count, s[i] != UInt8(ascii: ","), s[i] != 0x20 { value.append(s[i]); i += 1 }
                }
                params[name.lowercased()] = String(decoding: value, as: UTF8.self)
                skipSpace()
                if i < s.count, s[i] == UInt8(ascii: ",") { i += 1 } else { break }
            }
            challenges.append(AuthChallenge(scheme: scheme.lowercased(), parameters: params))
        }
        return challenges
    }
}
