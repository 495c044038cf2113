import Basics
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// A user name and password for a registry, as `--creds USER:PASSWORD` gives them or an auth
/// file's base64 `auth` field holds them.
public struct Credentials: Sendable, Equatable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    /// `USER:PASSWORD`, split at the first ':' (a password may contain ':'). skopeo asks for a
    /// missing password on the terminal; this tool wants it on the command line or in an auth file.
    public init(parsing text: String, what: String = "--creds") throws(RegistryError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw RegistryError(.invalidInput, "invalid \(what): no password given (USER:PASSWORD)")
        }
        username = String(text[..<colon])
        password = String(text[text.index(after: colon)...])
        guard !username.isEmpty else { throw RegistryError(.invalidInput, "invalid \(what): the user name is empty") }
    }

    /// The value of an `Authorization: Basic` header.
    var basicAuthorization: String {
        "Basic " + Base64.encode(Array("\(username):\(password)".utf8))
    }
}

/// Where credentials come from, in the order skopeo and podman look (containers-auth.json(5)):
/// `--creds`, else the first auth file that exists of `--authfile`, `$REGISTRY_AUTH_FILE`,
/// `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`. Within a file, the most
/// specific `auths` key wins: `host/repo/sub`, then `host/repo`, then `host`.
public enum CredentialLookup {
    /// The auth files to read, in order (those that do not exist are skipped).
    public static func authFiles(authFile: String?, environment: [String: String]) -> [String] {
        if let authFile { return [authFile] }
        var files: [String] = []
        if let f = environment["REGISTRY_AUTH_FILE"], !f.isEmpty { files.append(f) }
        if let run = environment["XDG_RUNTIME_DIR"], !run.isEmpty { files.append(run + "/containers/auth.json") }
        if let home = environment["HOME"], !home.isEmpty { files.append(home + "/.docker/config.json") }
        return files
    }

    /// The credentials for `reference`, or nil when no auth file has an entry for it. A file
    /// given with --authfile must exist; a malformed file is an error naming it.
    public static func credentials(
        for reference: RegistryReference, authFile: String?, environment: [String: String]
    ) throws(RegistryError) -> Credentials? {
        for file in authFiles(authFile: authFile, environment: environment) {
            let bytes: [UInt8]
            do {
                bytes = try Files.read(file)
            } catch {
                if authFile == nil, access(file, F_OK) != 0 { continue }
                throw RegistryError(.invalidInput, "cannot read auth file \(file): \(error.message)")
            }
            if let found = try credentials(for: reference, inAuthFile: bytes, path: file) { return found }
        }
        return nil
    }

    static func credentials(for reference: RegistryReference, inAuthFile bytes: [UInt8], path: String) throws(RegistryError) -> Credentials? {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch {
            throw RegistryError(.invalidInput, "auth file \(path) is not valid JSON: \(error.description)")
        }
        guard let auths = json.object?["auths"]?.object else { return nil }
        var byKey: [String: JSONObject] = [:]
        for m in auths.members {
            if let entry = m.value.object { byKey[normalizedKey(m.key)] = entry }
        }
        for key in candidateKeys(reference) {
            guard let entry = byKey[key] else { continue }
            guard let auth = entry["auth"]?.string, !auth.isEmpty else { continue }
            guard let decoded = Base64.decode(auth), let text = String(validating: decoded, as: UTF8.self) else {
                throw RegistryError(.invalidInput, "auth file \(path): the auth field of \(quote(key)) is not base64 of USER:PASSWORD")
            }
            return try Credentials(parsing: text, what: "auth field of \(quote(key)) in \(path)")
        }
        return nil
    }

    /// `https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/v2/` -> `host:5000`;
    /// `host/repo` stays as it is (repository-scoped entries).
    static func normalizedKey(_ key: String) -> String {
        var k = Substring(key)
        var hadScheme = false
        for scheme in ["https://", "http://"] where k.hasPrefix(scheme) {
            k = k.dropFirst(scheme.count)
            hadScheme = true
        }
        if hadScheme { k = k.prefix { $0 != "/" } }
        while k.hasSuffix("/") { k = k.dropLast() }
        if k == "index.docker.io" || k == "registry-1.docker.io" { return "docker.io" }
        return String(k)
    }

    static func candidateKeys(_ reference: RegistryReference) -> [String] {
        var keys: [String] = []
        var parts = reference.repository.split(separator: "/").map(String.init)
        while !parts.isEmpty {
            keys.append(reference.registry + "/" + parts.joined(separator: "/"))
            parts.removeLast()
        }
        keys.append(reference.registry)
        return keys
    }
}

extension TLSSettings {
    /// The TLS settings for a registry as containers-certs.d(5) has them: in `certDirectory`
    /// (`--cert-dir`), else `/etc/containers/certs.d/HOST[:PORT]` and
    /// `/etc/docker/certs.d/HOST[:PORT]`: every `*.crt` is a CA trusted besides the system store,
    /// a `NAME.cert` with its `NAME.key` is the client certificate (the first pair by name).
    public static func load(registry: String, certDirectory: String?, verify: Bool) throws(RegistryError) -> TLSSettings {
        var settings = TLSSettings(verify: verify)
        let directories = certDirectory.map { [$0] }
            ?? ["/etc/containers/certs.d/\(registry)", "/etc/docker/certs.d/\(registry)"]
        for directory in directories {
            guard let names = listDirectory(directory) else {
                if certDirectory != nil {
                    throw RegistryError(.invalidInput, "invalid --cert-dir \(directory): \(String(cString: strerror(errno)))")
                }
                continue
            }
            for name in names.sorted() {
                let path = directory + "/" + name
                if name.hasSuffix(".crt") {
                    do {
                        settings.certificateAuthorities += try Files.read(path) + [0x0A]
                    } catch {
                        throw RegistryError(.invalidInput, "cannot read CA certificate \(path): \(error.message)")
                    }
                } else if name.hasSuffix(".cert"), settings.clientCertificate == nil {
                    let key = directory + "/" + name.dropLast(5) + ".key"
                    guard access(key, R_OK) == 0 else {
                        throw RegistryError(.invalidInput, "client certificate \(path) has no key \(key)")
                    }
                    settings.clientCertificate = path
                    settings.clientKey = key
                } else if name.hasSuffix(".key") {
                    let cert = directory + "/" + name.dropLast(4) + ".cert"
                    guard access(cert, R_OK) == 0 else {
                        throw RegistryError(.invalidInput, "client key \(path) has no certificate \(cert)")
                    }
                }
            }
        }
        return settings
    }
}

/// The names in a directory, or nil (errno set) when it cannot be read.
private func listDirectory(_ path: String) -> [String]? {
    guard let dir = opendir(path) else { return nil }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}
