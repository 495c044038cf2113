import Basics
import OCI

/// `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` as skopeo (containers/image's docker transport) names
/// an image: the reference grammar of distribution/reference, with Docker Hub's defaults for a
/// name without a registry host (`docker.io`, `library/` before a one-component name).
public struct RegistryReference: Sendable, Equatable, CustomStringConvertible {
    /// The registry as named (`127.0.0.1:5000`, `docker.io`), with its port if one was given.
    public var registry: String
    /// The repository path within the registry (`library/debian`).
    public var repository: String
    /// The tag, unless the reference is pinned by digest.
    public var tag: String?
    /// The manifest digest the reference is pinned to.
    public var digest: Digest?

    public static let scheme = "docker://"
    public static let defaultTag = "latest"
    static let dockerHub = "docker.io"

    public init(registry: String, repository: String, tag: String? = nil, digest: Digest? = nil) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    /// Parses `docker://...` (the scheme is required, as in skopeo).
    public init(parsing text: String) throws(RegistryError) {
        guard text.hasPrefix(RegistryReference.scheme) else {
            throw RegistryError(.invalidInput, "invalid image reference \(quote(text)): a registry image starts with docker://")
        }
        func bad(_ why: String) -> RegistryError {
            RegistryError(.invalidInput, "invalid image reference \(quote(text)): \(why)")
        }
        var rest = Substring(text.dropFirst(RegistryReference.scheme.count))
        guard !rest.hasPrefix("/") else { throw bad("the name must not start with '/' (docker://HOST/REPO)") }
        var digest: Digest?
        if let at = rest.lastIndex(of: "@") {
            do { digest = try Digest(parsing: String(rest[rest.index(after: at)...])) } catch { throw bad(error.message) }
            rest = rest[..<at]
        }
        var tag: String?
        if let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            let t = String(rest[rest.index(after: colon)...])
            guard RegistryReference.isValidTag(t) else { throw bad("tag \(quote(t)) must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}") }
            tag = t
            rest = rest[..<colon]
        }
        guard tag == nil || digest == nil else {
            throw bad("a tag and a digest together are not supported (as in skopeo); give one")
        }
        var components = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard let first = components.first, !first.isEmpty else { throw bad("the name is empty") }
        var registry = RegistryReference.dockerHub
        if components.count > 1, first.contains(".") || first.contains(":") || first == "localhost" {
            guard RegistryReference.isValidHost(first) else { throw bad("registry host \(quote(first)) is not HOST[:PORT]") }
            registry = first
            components.removeFirst()
        }
        for c in components {
            guard RegistryReference.isValidPathComponent(c) else {
                throw bad("repository component \(quote(c)) must be lowercase [a-z0-9] separated by '.', '_', '__' or '-'")
            }
        }
        if registry == RegistryReference.dockerHub, components.count == 1 { components.insert("library", at: 0) }
        let repository = components.joined(separator: "/")
        guard registry.utf8.count + 1 + repository.utf8.count <= 255 else { throw bad("the name is longer than 255 characters") }
        self.init(registry: registry, repository: repository, tag: digest == nil ? (tag ?? RegistryReference.defaultTag) : nil, digest: digest)
    }

    /// The tag or digest, as it appears in `/v2/<name>/manifests/<reference>`.
    public var manifestReference: String { digest?.description ?? tag ?? RegistryReference.defaultTag }

    public var description: String {
        let name = "\(RegistryReference.scheme)\(registry)/\(repository)"
        if let digest { return "\(name)@\(digest)" }
        return "\(name):\(tag ?? RegistryReference.defaultTag)"
    }

    /// This reference pinned to a digest (the tag dropped), as a bundle records its source.
    public func pinned(to digest: Digest) -> RegistryReference {
        RegistryReference(registry: registry, repository: repository, tag: nil, digest: digest)
    }

    /// The host name and port HTTP requests go to: Docker Hub's API lives on another host.
    public var endpoint: String { registry == RegistryReference.dockerHub ? "registry-1.docker.io" : registry }

    /// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
    public static func isValidTag(_ tag: String) -> Bool {
        let bytes = Array(tag.utf8)
        guard let first = bytes.first, bytes.count <= 128, isWord(first) else { return false }
        return bytes.allSatisfy { isWord($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
    static func isValidPathComponent(_ c: String) -> Bool {
        let bytes = Array(c.utf8)
        guard let first = bytes.first, let last = bytes.last, isLowerAlnum(first), isLowerAlnum(last) else { return false }
        var separator: [UInt8] = []
        for b in bytes {
            if isLowerAlnum(b) {
                if !separator.isEmpty {
                    let ok = separator == [0x2E] || separator == [0x5F] || separator == [0x5F, 0x5F] || separator.allSatisfy { $0 == 0x2D }
                    guard ok else { return false }
                    separator.removeAll(keepingCapacity: true)
                }
            } else if b == UInt8(ascii: ".") || b == UInt8(ascii: "_") || b == UInt8(ascii: "-") {
                separator.append(b)
            } else {
                return false
            }
        }
        return true
    }

    /// `domain-component(.domain-component)*[:port]`, or a bracketed IPv6 address with a port.
    static func isValidHost(_ host: String) -> Bool {
        var name = Substring(host)
        if name.hasPrefix("[") {
            guard let close = name.firstIndex(of: "]") else { return false }
            let address = name[name.index(after: name.startIndex)..<close]
            guard !address.isEmpty, address.allSatisfy({ $0.isHexDigit || $0 == ":" }) else { return false }
            name = name[name.index(after: close)...]
            if name.isEmpty { return true }
            guard name.hasPrefix(":") else { return false }
            let port = name.dropFirst()
            return !port.isEmpty && port.allSatisfy(\.isASCII) && port.allSatisfy(\.isNumber)
        }
        if let colon = name.lastIndex(of: ":") {
            let port = name[name.index(after: colon)...]
            guard !port.isEmpty, port.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return false }
            name = name[..<colon]
        }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { component in
            let b = Array(component.utf8)
            guard let f = b.first, let l = b.last, isAlnum(f), isAlnum(l) else { return false }
            return b.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") }
        }
    }

    static func isLowerAlnum(_ b: UInt8) -> Bool { (0x30...0x39).contains(b) || (0x61...0x7A).contains(b) }
    static func isAlnum(_ b: UInt8) -> Bool { isLowerAlnum(b) || (0x41...0x5A).contains(b) }
    static func isWord(_ b: UInt8) -> Bool { isAlnum(b) || b == UInt8(ascii: "_") }
}

/// Where `--image` points: a local OCI layout (`oci:PATH[:TAG]`, or today's `PATH[:TAG]`) or a
/// registry (`docker://...`). The one parser the command line uses for both.
public enum ImageLocation: Sendable, Equatable, CustomStringConvertible {
    case layout(ImageReference)
    case registry(RegistryReference)

    public static let layoutScheme = "oci:"

    public init(parsing text: String) throws(RegistryError) {
        if text.hasPrefix(RegistryReference.scheme) {
            self = .registry(try RegistryReference(parsing: text))
            return
        }
        if let colon = text.firstIndex(of: ":"), text[..<colon].contains(where: { $0 == "/" }) == false,
           text[text.index(after: colon)...].hasPrefix("//") {
            // "https://...", "containers-storage://...": a transport this tool does not read.
            throw RegistryError(.invalidInput, "invalid image reference \(quote(text)): unsupported transport \(quote(String(text[..<colon])))"
                + " (use docker://HOST/REPO:TAG or oci:PATH:TAG)")
        }
        let layoutText = text.hasPrefix(ImageLocation.layoutScheme) ? String(text.dropFirst(ImageLocation.layoutScheme.count)) : text
        do {
            self = .layout(try ImageReference(parsing: layoutText))
        } catch {
            throw RegistryError(.invalidInput, error.message)
        }
    }

    public var description: String {
        switch self {
        case .layout(let r): return "\(ImageLocation.layoutScheme)\(r)"
        case .registry(let r): return r.description
        }
    }
}

/// A value quoted for an error message, as Go's %q would show it.
func quote(_ s: String) -> String { JSON.string(s).text }
