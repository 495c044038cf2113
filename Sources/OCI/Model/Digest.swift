import CCrypto
import Basics

/// A content digest `algorithm:encoded`, validated against the OCI image-spec grammar. A malformed
/// digest is an error and never becomes a path: `encoded` only ever holds `[a-zA-Z0-9=_-]`, and
/// for the registered algorithms exactly the hex length they produce.
public struct Digest: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let algorithm: String
    public let encoded: String

    public static let sha256 = "sha256"
    public static let sha512 = "sha512"

    public init(parsing text: String) throws(StoreError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw StoreError(.invalidInput, "invalid digest \(quoted: text): missing ':'")
        }
        let algorithm = String(text[..<colon])
        let encoded = String(text[text.index(after: colon)...])
        guard Digest.isValidAlgorithm(algorithm) else {
            throw StoreError(.invalidInput, "invalid digest \(quoted: text): bad algorithm")
        }
        guard !encoded.isEmpty, encoded.utf8.allSatisfy(Digest.isEncodedByte) else {
            throw StoreError(.invalidInput, "invalid digest \(quoted: text): bad encoded part")
        }
        if let length = Digest.hexLength(algorithm) {
            guard encoded.utf8.count == length, encoded.utf8.allSatisfy(Digest.isLowerHex) else {
                throw StoreError(.invalidInput, "invalid digest \(quoted: text): \(algorithm) needs \(length) lowercase hex digits")
            }
        }
        self.algorithm = algorithm
        self.encoded = encoded
    }

    init(algorithm: String, hex: String) {
        self.algorithm = algorithm
        self.encoded = hex
    }

    public var description: String { "\(algorithm):\(encoded)" }

    public static func < (a: Digest, b: Digest) -> Bool { a.description < b.description }

    /// Hex length of the registered algorithms this tool can verify; nil for the others.
    static func hexLength(_ algorithm: String) -> Int? {
        switch algorithm {
        case sha256: return 64
        case sha512: return 128
        default: return nil
        }
    }

    public var isVerifiable: Bool { Digest.hexLength(algorithm) != nil }

    static func isLowerHex(_ b: UInt8) -> Bool { (0x30...0x39).contains(b) || (0x61...0x66).contains(b) }

    static func isEncodedByte(_ b: UInt8) -> Bool {
        switch b {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, UInt8(ascii: "="), UInt8(ascii: "_"), UInt8(ascii: "-"): return true
        default: return false
        }
    }

    /// `[a-z0-9]+([+._-][a-z0-9]+)*`
    static func isValidAlgorithm(_ s: String) -> Bool {
        var lastWasSeparator = true
        for b in s.utf8 {
            switch b {
            case 0x30...0x39, 0x61...0x7A: lastWasSeparator = false
            case UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                if lastWasSeparator { return false }
                lastWasSeparator = true
            default: return false
            }
        }
        return !lastWasSeparator
    }
}

/// Incremental SHA-256 or SHA-512 through libcrypto's EVP interface. One owner at a time: not
/// safe for concurrent use.
public final class DigestHasher {
    private let context: OpaquePointer
    public let algorithm: String

    public init(algorithm: String = Digest.sha256) throws(StoreError) {
        let md: OpaquePointer?
        switch algorithm {
        case Digest.sha256: md = EVP_sha256()
        case Digest.sha512: md = EVP_sha512()
        default: throw StoreError(.unsupported, "unsupported digest algorithm \(quoted: algorithm)")
        }
        guard let ctx = EVP_MD_CTX_new(), EVP_DigestInit_ex(ctx, md, nil) == 1 else {
            fatalError("libcrypto: cannot initialise \(algorithm)")
        }
        self.context = ctx
        self.algorithm = algorithm
    }

    deinit { EVP_MD_CTX_free(context) }

    public func update(_ buffer: UnsafeRawBufferPointer) {
        guard buffer.count > 0 else { return }
        EVP_DigestUpdate(context, buffer.baseAddress, buffer.count)
    }

    public func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The digest of everything fed so far; call once.
    public func finalize() -> Digest {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context, &out, &length)
        var hex = ""
        hex.reserveCapacity(Int(length) * 2)
        let digits = Array("0123456789abcdef")
        for b in out.prefix(Int(length)) {
            hex.append(digits[Int(b >> 4)])
            hex.append(digits[Int(b & 0xF)])
        }
        return Digest(algorithm: algorithm, hex: hex)
    }

    public static func digest(of bytes: [UInt8], algorithm: String = Digest.sha256) throws(StoreError) -> Digest {
        let h = try DigestHasher(algorithm: algorithm)
        h.update(bytes)
        return h.finalize()
    }
}
