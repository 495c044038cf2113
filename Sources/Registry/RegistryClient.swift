import Basics
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// How to reach and authenticate to a registry: skopeo's and podman's flags.
public struct RegistryOptions: Sendable {
    /// `--creds USER:PASSWORD`; when nil, the auth files are read (`CredentialLookup`).
    public var credentials: Credentials?
    /// `--authfile FILE`.
    public var authFile: String?
    /// `--cert-dir DIR` (containers-certs.d layout).
    public var certDirectory: String?
    /// `--tls-verify=false`: no certificate check, and plain HTTP when HTTPS fails.
    public var tlsVerify: Bool
    /// The environment the auth files are found from (`REGISTRY_AUTH_FILE`, `XDG_RUNTIME_DIR`, `HOME`).
    public var environment: [String: String]
    public var userAgent: String

    public init(
        credentials: Credentials? = nil, authFile: String? = nil, certDirectory: String? = nil, tlsVerify: Bool = true,
        environment: [String: String] = [:], userAgent: String = "umoci-swift"
    ) {
        self.credentials = credentials
        self.authFile = authFile
        self.certDirectory = certDirectory
        self.tlsVerify = tlsVerify
        self.environment = environment
        self.userAgent = userAgent
    }
}

/// A manifest or index as the registry sent it, its digest verified.
public struct FetchedManifest: Sendable, Equatable {
    public let bytes: [UInt8]
    public let mediaType: String
    public let digest: Digest

    /// A descriptor of these bytes.
    public var descriptor: Descriptor { Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count)) }
}

/// An image manifest found from a reference: through an index when the reference names one.
public struct ResolvedImage: Sendable {
    /// The reference as given.
    public let reference: RegistryReference
    /// The index (or Docker manifest list) the manifest was chosen from, if any.
    public let index: FetchedManifest?
    public let manifest: FetchedManifest
    public let parsed: Manifest

    /// The image pinned: `docker://HOST/REPO@<manifest digest>`, what a bundle records as its source.
    public var pinnedReference: RegistryReference { reference.pinned(to: manifest.digest) }
}

/// What `RegistryClient.pushBlob` had to do.
public enum BlobPushResult: Sendable, Equatable {
    /// The repository had the blob already (HEAD).
    case existed
    /// The registry linked it from another repository (cross-repository mount).
    case mounted
    case uploaded
}

/// The client side of the OCI distribution spec v1.1 for one registry, on libcurl: manifests
/// with content negotiation, verified blob streams, Range reads, uploads. Authentication (Basic,
/// Bearer tokens refreshed on 401) and the scheme (HTTPS, or HTTP with `tlsVerify` off) are
/// settled on the first request and kept.
///
/// One owner at a time (one libcurl handle, its connections kept alive): for parallel
/// transfers, make one client per thread.
public final class RegistryClient {
    /// The registry as named in references (`127.0.0.1:5000`).
    public let registry: String
    /// host[:port] requests go to.
    let endpoint: String
    let tls: TLSSettings
    let credentials: Credentials?
    private let transfer: CurlTransfer

    /// "https://host:port" or "http://host:port", once `/v2/` answered.
    private var base: String?
    /// The scheme the registry asked for at `/v2/`: nil (no authentication), basic or bearer.
    private var challenge: AuthChallenge?
    /// Bearer tokens by the scopes they were asked for (sorted, space-separated).
    private var tokens: [String: String] = [:]

    public static let manifestMediaTypes = [
        MediaType.imageManifest, MediaType.imageIndex, MediaType.dockerManifest, MediaType.dockerManifestList,
    ]
    /// The distribution spec's suggested bound for a manifest a client accepts.
    static let manifestLimit = 4 << 20

    /// A client for `reference`'s registry, with credentials for its repository.
    public init(for reference: RegistryReference, options: RegistryOptions) throws(RegistryError) {
        registry = reference.registry
        endpoint = reference.endpoint
        tls = try TLSSettings.load(registry: reference.registry, certDirectory: options.certDirectory, verify: options.tlsVerify)
        if let given = options.credentials {
            credentials = given
        } else {
            credentials = try CredentialLookup.credentials(for: reference, authFile: options.authFile, environment: options.environment)
        }
        transfer = try CurlTransfer(userAgent: options.userAgent)
    }

    // MARK: Manifests

    /// `manifest HOST/REPO:TAG` or `manifest HOST/REPO@DIGEST`, for messages.
    private func manifestName(_ repository: String, _ reference: String) -> String {
        let separator = (try? Digest(parsing: reference)) == nil ? ":" : "@"
        return "manifest \(registry)/\(repository)\(separator)\(reference)"
    }

    /// `GET /v2/<name>/manifests/<reference>` accepting OCI and Docker schema 2 manifests and
    /// indexes; the bytes are verified against the reference's digest, else against the
    /// registry's Docker-Content-Digest.
    public func fetchManifest(_ repository: String, reference: String, expected: Digest? = nil) throws(RegistryError) -> FetchedManifest {
        let what = manifestName(repository, reference)
        let r = try send("GET", "/v2/\(repository)/manifests/\(reference)", scopes: [pullScope(repository)],
                         headers: ["Accept: " + RegistryClient.manifestMediaTypes.joined(separator: ", ")],
                         bodyLimit: RegistryClient.manifestLimit, what: what)
        guard r.status == 200 else { throw statusError(r, what) }
        var mediaType = (r.header("content-type") ?? "").split(separator: ";").first.map { String($0).trimmingSpaces() } ?? ""
        if let json = try? JSON.parse(r.body), let declared = json.object?["mediaType"]?.string, !declared.isEmpty {
            mediaType = declared
        }
        guard RegistryClient.manifestMediaTypes.contains(mediaType) else {
            throw RegistryError(.protocolViolation, "\(what): unsupported manifest media type \(quote(mediaType))")
        }
        let claimed: Digest?
        do { claimed = try r.header("docker-content-digest").map { (s) throws(StoreError) in try Digest(parsing: s) } } catch {
            throw RegistryError(.protocolViolation, "\(what): invalid Docker-Content-Digest: \(error.message)")
        }
        let check = expected ?? claimed ?? (try? Digest(parsing: reference))
        let digest = try verify(r.body, against: check, what: what)
        return FetchedManifest(bytes: r.body, mediaType: mediaType, digest: digest)
    }

    /// `HEAD /v2/<name>/manifests/<reference>`: the manifest's descriptor, or nil when the
    /// registry does not have it.
    public func headManifest(_ repository: String, reference: String) throws(RegistryError) -> Descriptor? {
        let what = manifestName(repository, reference)
        let r = try send("HEAD", "/v2/\(repository)/manifests/\(reference)", scopes: [pullScope(repository)],
                         headers: ["Accept: " + RegistryClient.manifestMediaTypes.joined(separator: ", ")], what: what)
        if r.status == 404 { return nil }
        guard r.status == 200 else { throw statusError(r, what) }
        guard let text = r.header("docker-content-digest"), let digest = try? Digest(parsing: text),
              let size = r.header("content-length").flatMap({ Int64($0) }) else {
            throw RegistryError(.protocolViolation, "\(what): HEAD answered without Docker-Content-Digest and Content-Length")
        }
        let mediaType = (r.header("content-type") ?? "").split(separator: ";").first.map { String($0).trimmingSpaces() } ?? ""
        return Descriptor(mediaType: mediaType, digest: digest, size: size)
    }

    /// The image manifest `reference` names: through an index, the entry `platform` runs best.
    public func resolve(_ reference: RegistryReference, platform: Platform = .host) throws(RegistryError) -> ResolvedImage {
        guard reference.registry == registry else {
            throw RegistryError(.invalidInput, "\(reference) is not on registry \(registry)")
        }
        var fetched = try fetchManifest(reference.repository, reference: reference.manifestReference, expected: reference.digest)
        var index: FetchedManifest?
        // An index may name another index; four levels is more than any registry serves.
        for _ in 0..<4 where MediaType.isIndex(fetched.mediaType) {
            index = fetched
            let parsed: ImageIndex
            do { parsed = try ImageIndex(json: try parseJSON(fetched.bytes, "index \(fetched.digest)"), what: "index \(fetched.digest) of \(reference)") } catch {
                throw RegistryError(error)
            }
            guard let entry = platform.choose(from: parsed.manifests) else {
                let offered = parsed.manifests.compactMap { Platform(descriptor: $0)?.description }
                throw RegistryError(.notFound, "\(reference): no image for \(platform) in its index (it has \(offered.isEmpty ? "no platforms" : offered.joined(separator: ", ")))")
            }
            fetched = try fetchManifest(reference.repository, reference: entry.digest.description, expected: entry.digest)
            guard Int64(fetched.bytes.count) == entry.size else {
                throw RegistryError(.digestMismatch, "manifest \(entry.digest) of \(reference): \(fetched.bytes.count) bytes, its index entry says \(entry.size)")
            }
        }
        guard MediaType.isManifest(fetched.mediaType) else {
            throw RegistryError(.protocolViolation, "\(reference): indexes nested too deep")
        }
        let manifest: Manifest
        do { manifest = try Manifest(json: try parseJSON(fetched.bytes, "manifest \(fetched.digest)"), digest: fetched.digest) } catch {
            throw RegistryError(error)
        }
        return ResolvedImage(reference: reference, index: index, manifest: fetched, parsed: manifest)
    }

    // MARK: Blobs

    /// `HEAD /v2/<name>/blobs/<digest>`: the blob's size, or nil when the repository lacks it.
    public func blobSize(_ digest: Digest, in repository: String) throws(RegistryError) -> Int64? {
        try blobSize(digest, in: repository, scopes: [pullScope(repository)])
    }

    /// Streams a blob to `sink`, following redirects, its size and digest verified: the call
    /// returns only when all `descriptor.size` bytes arrived and hash to `descriptor.digest`.
    /// `sink` sees the bytes before that check, so whatever it builds from them must be
    /// committed only once this returns (`fetchBlob(_:from:into:)` does so for a file).
    ///
    /// A connection cut mid-blob is resumed from where it stopped with a Range request (up to
    /// three times); a registry that answers that with the whole blob has its first bytes skipped.
    public func fetchBlob(
        _ descriptor: Descriptor, from repository: String, to sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws(RegistryError) {
        let what = "blob \(descriptor.digest) of \(registry)/\(repository)"
        let hasher: DigestHasher
        do { hasher = try DigestHasher(algorithm: descriptor.digest.algorithm) } catch { throw RegistryError(error, kind: .invalidInput).context(what) }
        let size = descriptor.size
        var received: Int64 = 0
        var resumes = 0
        while true {
            let resumeAt = received
            // A 200 to the resumption: the whole blob again, its first `resumeAt` bytes skipped.
            var skip: Int64 = 0
            // A 206 that does not start where asked.
            var misplaced = false
            var failure: RegistryError?
            let response: HTTPResponse
            do {
                response = try withoutActuallyEscaping(sink) { (sink) throws(RegistryError) -> HTTPResponse in
                    try send("GET", "/v2/\(repository)/blobs/\(descriptor.digest)", scopes: [pullScope(repository)],
                             range: resumeAt > 0 ? (resumeAt, nil) : nil, what: what, onStatus: { r in
                        if resumeAt > 0, r.status == 200 { skip = resumeAt }
                        if resumeAt > 0, r.status == 206 {
                            misplaced = r.header("content-range").flatMap(RegistryClient.contentRangeStart) != resumeAt
                        }
                    }) { chunk in
                        guard !misplaced else {
                            throw RegistryError(.protocolViolation, "\(what): the registry resumed at another offset than \(resumeAt)")
                        }
                        var chunk = chunk
                        if skip > 0 {
                            let n = Int(min(skip, Int64(chunk.count)))
                            skip -= Int64(n)
                            chunk = UnsafeRawBufferPointer(rebasing: chunk[n...])
                            if chunk.isEmpty { return }
                        }
                        guard received + Int64(chunk.count) <= size else {
                            throw RegistryError(.digestMismatch, "\(what): more than the \(size) bytes its descriptor says")
                        }
                        hasher.update(chunk)
                        received += Int64(chunk.count)
                        try sink(chunk)
                    }
                }
            } catch {
                failure = error
                response = HTTPResponse(status: 0, headers: [], body: [], url: "")
            }
            if let failure {
                // Only a cut connection is resumed, and only when this attempt made progress.
                guard failure.kind == .unreachable, received > resumeAt, received < size, resumes < 3 else {
                    if failure.kind == .unreachable, received > 0 {
                        throw RegistryError(failure.kind, "\(what): connection cut after \(received) of \(size) bytes: \(failure.message)")
                    }
                    throw failure
                }
                resumes += 1
                continue
            }
            if resumeAt > 0 {
                guard response.status == 206 || response.status == 200 else { throw statusError(response, what) }
            } else {
                guard response.status == 200 else { throw statusError(response, what) }
            }
            break
        }
        guard received == size else {
            throw RegistryError(.digestMismatch, "\(what): \(received) bytes, its descriptor says \(size)")
        }
        let actual = hasher.finalize()
        guard actual == descriptor.digest else {
            throw RegistryError(.digestMismatch, "\(what): digest mismatch: the registry's bytes hash to \(actual)")
        }
    }

    /// Downloads a blob into `path`, atomically: a temporary file beside it is renamed onto
    /// `path` only after the blob was verified, and removed on any failure. The same bytes go
    /// to `observer` as they arrive (see `BlobObserver`), so that what is built from them is
    /// ready when the download ends.
    public func fetchBlob(
        _ descriptor: Descriptor, from repository: String, into path: String, observer: (any BlobObserver)? = nil
    ) throws(RegistryError) {
        let directory = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        var template = Array("\(directory)/.download-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw RegistryError(.local, StoreError.system("create a temporary file in", directory).message) }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var done = false
        defer {
            close(fd)
            if !done {
                unlink(temporary)
                observer?.abandon()
            }
        }
        do {
            var received: Int64 = 0
            try fetchBlob(descriptor, from: repository) { chunk in
                try Files.writeAll(fd, chunk, path: temporary)
                try observer?.consume(chunk)
                received += Int64(chunk.count)
                observer?.progress(received)
            }
            try Files.fsync(fd, path: temporary)
            try observer?.verified()
        } catch let error as RegistryError {
            throw error
        } catch let error as StoreError {
            throw RegistryError(error, kind: .local)
        } catch {
            throw RegistryError(.local, "\(error)")
        }
        fchmod(fd, 0o644)
        guard rename(temporary, path) == 0 else { throw RegistryError(.local, StoreError.system("rename \(temporary) to", path).message) }
        done = true
        do {
            try observer?.placed(at: path)
        } catch {
            throw RegistryError(error, kind: .local)
        }
    }

    /// Bytes `range` of a blob (`Range: bytes=...`), to `sink`. These bytes are not verified
    /// here (a part cannot be checked against the blob's digest): the caller checks them
    /// against what it knows of the part. A registry that ignores Range and sends the whole
    /// blob still gives exactly `range`: the bytes before it are skipped and the transfer stops
    /// after it. Returns whether the registry honoured the Range.
    @discardableResult
    public func fetchBlobRange(
        _ digest: Digest, from repository: String, range: Range<Int64>, to sink: (UnsafeRawBufferPointer) throws -> Void
    ) throws(RegistryError) -> Bool {
        let what = "bytes \(range.lowerBound)-\(range.upperBound) of blob \(digest) of \(registry)/\(repository)"
        guard !range.isEmpty else { return true }
        var position: Int64 = -1
        var honoured = false
        var delivered: Int64 = 0
        let response = try withoutActuallyEscaping(sink) { (sink) throws(RegistryError) -> HTTPResponse in
            try send("GET", "/v2/\(repository)/blobs/\(digest)", scopes: [pullScope(repository)],
                     range: (range.lowerBound, range.upperBound - 1), what: what, onStatus: { r in
                honoured = r.status == 206
                position = 0
                if honoured, let cr = r.header("content-range"), let start = RegistryClient.contentRangeStart(cr) { position = start }
                else if honoured { position = range.lowerBound }
            }) { chunk in
                var chunk = chunk
                let start = position
                position += Int64(chunk.count)
                if start < range.lowerBound {
                    let n = Int(min(range.lowerBound - start, Int64(chunk.count)))
                    chunk = UnsafeRawBufferPointer(rebasing: chunk[n...])
                }
                let room = range.count - Int(delivered)
                if chunk.count > room { chunk = UnsafeRawBufferPointer(rebasing: chunk[..<room]) }
                if !chunk.isEmpty {
                    delivered += Int64(chunk.count)
                    try sink(chunk)
                }
                if delivered == Int64(range.count) { throw StopTransfer() }
            }
        }
        guard response.status == 206 || response.status == 200 else { throw statusError(response, what) }
        guard delivered == Int64(range.count) else {
            throw RegistryError(.protocolViolation, "\(what): the registry sent \(delivered) of \(range.count) bytes")
        }
        return honoured
    }

    static func contentRangeStart(_ header: String) -> Int64? {
        // "bytes 100-199/1000"
        let v = header.hasPrefix("bytes ") ? header.dropFirst(6) : Substring(header)
        return v.split(separator: "-").first.flatMap { Int64($0) }
    }

    // MARK: Push

    /// Puts a blob into `repository` unless it is there already: HEAD first; with `mountFrom`,
    /// a cross-repository mount (`POST .../blobs/uploads/?mount=<digest>&from=<repo>`); else an
    /// upload, monolithic (POST, then PUT with the digest) or in `chunkSize` PATCHes.
    @discardableResult
    public func pushBlob(
        _ descriptor: Descriptor, body: UploadBody, to repository: String, mountFrom: String? = nil, chunkSize: Int64? = nil
    ) throws(RegistryError) -> BlobPushResult {
        let what = "blob \(descriptor.digest) to \(registry)/\(repository)"
        guard body.length == descriptor.size else {
            throw RegistryError(.invalidInput, "\(what): \(body.length) bytes to send, its descriptor says \(descriptor.size)")
        }
        let scopes = [pushScope(repository)] + (mountFrom.map { [pullScope($0)] } ?? [])
        if try blobSize(descriptor.digest, in: repository, scopes: scopes) != nil { return .existed }
        var path = "/v2/\(repository)/blobs/uploads/"
        if let mountFrom { path += "?mount=\(descriptor.digest)&from=\(mountFrom)" }
        let start = try send("POST", path, scopes: scopes, what: what)
        if start.status == 201, mountFrom != nil { return .mounted }
        guard start.status == 202, var location = start.header("location") else { throw statusError(start, "\(what): starting the upload") }
        if let chunkSize, chunkSize > 0 {
            var offset: Int64 = 0
            while offset < body.length {
                let n = min(chunkSize, body.length - offset)
                let r = try send("PATCH", location, scopes: scopes,
                                 headers: ["Content-Type: application/octet-stream", "Content-Range: \(offset)-\(offset + n - 1)"],
                                 body: body.slice(offset, n), what: what)
                guard r.status == 202, let next = r.header("location") else { throw statusError(r, "\(what): chunk at \(offset)") }
                location = next
                offset += n
            }
            let done = try send("PUT", location.appendingQuery("digest=\(descriptor.digest)"), scopes: scopes, what: what)
            guard done.status == 201 else { throw statusError(done, "\(what): closing the upload") }
        } else {
            let done = try send("PUT", location.appendingQuery("digest=\(descriptor.digest)"), scopes: scopes,
                                headers: ["Content-Type: application/octet-stream"], body: body, what: what)
            guard done.status == 201 else { throw statusError(done, "\(what): uploading") }
        }
        return .uploaded
    }

    /// `PUT /v2/<name>/manifests/<reference>`; returns the manifest's digest, checked against
    /// the registry's Docker-Content-Digest.
    @discardableResult
    public func putManifest(_ bytes: [UInt8], mediaType: String, to repository: String, reference: String) throws(RegistryError) -> Digest {
        let what = manifestName(repository, reference)
        let digest: Digest
        do { digest = try DigestHasher.digest(of: bytes) } catch { throw RegistryError(error) }
        let r = try send("PUT", "/v2/\(repository)/manifests/\(reference)", scopes: [pushScope(repository)],
                         headers: ["Content-Type: \(mediaType)"], body: .bytes(bytes), what: what)
        guard r.status == 201 else { throw statusError(r, what) }
        if let text = r.header("docker-content-digest"), let claimed = try? Digest(parsing: text), claimed != digest {
            throw RegistryError(.digestMismatch, "\(what): the registry stored it as \(claimed), its bytes hash to \(digest)")
        }
        return digest
    }

    // MARK: Requests and authentication

    func pullScope(_ repository: String) -> String { "repository:\(repository):pull" }
    func pushScope(_ repository: String) -> String { "repository:\(repository):pull,push" }

    private func blobSize(_ digest: Digest, in repository: String, scopes: [String]) throws(RegistryError) -> Int64? {
        let what = "blob \(digest) of \(registry)/\(repository)"
        let r = try send("HEAD", "/v2/\(repository)/blobs/\(digest)", scopes: scopes, what: what)
        if r.status == 404 { return nil }
        guard r.status == 200 else { throw statusError(r, what) }
        return r.header("content-length").flatMap { Int64($0) } ?? -1
    }

    /// `GET /v2/`: which scheme answers, and which authentication the registry asks for.
    private func ping() throws(RegistryError) -> String {
        if let base { return base }
        var candidates = ["https://\(endpoint)"]
        if !tls.verify { candidates.append("http://\(endpoint)") }
        var firstError: RegistryError?
        for candidate in candidates {
            do {
                let r = try transfer.perform(HTTPRequest(method: "GET", url: candidate + "/v2/", bodyLimit: 1 << 16), tls: tls)
                if r.status == 401 {
                    let all = r.headers("www-authenticate").flatMap(AuthChallenge.parse)
                    challenge = all.first { $0.scheme == "bearer" } ?? all.first { $0.scheme == "basic" }
                }
                base = candidate
                return candidate
            } catch {
                // An HTTP registry answers a TLS hello with garbage (a TLS error): try HTTP. A
                // refused connection is refused on both; report the first failure.
                if firstError == nil {
                    // "wrong version number": the registry speaks plain HTTP.
                    firstError = error.kind == .tls && tls.verify
                        ? RegistryError(.tls, error.message + " (a plain-HTTP registry needs --tls-verify=false)") : error
                }
                if error.kind != .tls { break }
            }
        }
        throw firstError!
    }

    /// The Authorization header for `scopes`, fetching a Bearer token when there is none
    /// cached (or `refresh` asks for a new one).
    private func authorization(_ scopes: [String], refresh: Bool) throws(RegistryError) -> String? {
        guard let challenge else { return nil }
        switch challenge.scheme {
        case "basic":
            return credentials?.basicAuthorization
        case "bearer":
            let key = scopes.sorted().joined(separator: " ")
            if !refresh, let token = tokens[key] { return "Bearer " + token }
            let token = try fetchToken(challenge, scopes: scopes)
            tokens[key] = token
            return "Bearer " + token
        default:
            return nil
        }
    }

    /// The Bearer token flow (distribution's token authentication): `GET realm?service=&scope=`
    /// with Basic credentials when there are any, anonymous otherwise.
    private func fetchToken(_ challenge: AuthChallenge, scopes: [String]) throws(RegistryError) -> String {
        guard let realm = challenge.parameters["realm"], realm.hasPrefix("https://") || realm.hasPrefix("http://") else {
            throw RegistryError(.protocolViolation, "registry \(registry) asks for a Bearer token without a usable realm")
        }
        var query: [String] = []
        if let service = challenge.parameters["service"] { query.append("service=" + transfer.escape(service)) }
        var allScopes = scopes
        if let own = challenge.parameters["scope"], !own.isEmpty, !allScopes.contains(own) { allScopes.append(own) }
        for scope in allScopes { query.append("scope=" + transfer.escape(scope)) }
        var request = HTTPRequest(method: "GET", url: realm.appendingQuery(query.joined(separator: "&")), bodyLimit: 1 << 20)
        if let credentials { request.headers.append("Authorization: " + credentials.basicAuthorization) }
        let r = try transfer.perform(request, tls: tls)
        let what = "token for \(registry) from \(hostPort(of: realm))"
        if r.status == 401 || r.status == 403 { throw rejected(status: r.status) }
        guard r.status == 200 else { throw statusError(r, what) }
        guard let object = try? JSON.parse(r.body).object,
              let token = object["token"]?.string ?? object["access_token"]?.string, !token.isEmpty else {
            throw RegistryError(.protocolViolation, "\(what): the answer holds no token")
        }
        return token
    }

    private func rejected(status: Int) -> RegistryError {
        if let credentials {
            return RegistryError(.unauthorized, "registry \(registry) rejected the credentials of user \(quote(credentials.username)): wrong user name or password (HTTP \(status))")
        }
        return RegistryError(.unauthorized, "registry \(registry) requires credentials (give --creds USER:PASSWORD or an auth file)")
    }

    /// One request with authentication: a 401 with a cached token fetches a new one and tries
    /// again; a 401 after fresh credentials is a wrong password. `path` is absolute or a
    /// `/v2/...` path. `onStatus` sees the final response's status and headers before its body.
    private func send(
        _ method: String, _ path: String, scopes: [String], headers: [String] = [], body: UploadBody? = nil,
        range: (Int64, Int64?)? = nil, bodyLimit: Int = 1 << 20, what: String,
        onStatus: ((HTTPResponse) -> Void)? = nil, sink: ((UnsafeRawBufferPointer) throws -> Void)? = nil
    ) throws(RegistryError) -> HTTPResponse {
        let base = try ping()
        let url = path.hasPrefix("http://") || path.hasPrefix("https://") ? path : base + path
        var refresh = false
        var sentFresh = false
        while true {
            let hadToken = challenge?.scheme == "bearer" && tokens[scopes.sorted().joined(separator: " ")] != nil
            let auth = try authorization(scopes, refresh: refresh)
            sentFresh = challenge?.scheme == "bearer" ? (refresh || !hadToken) : auth != nil
            var request = HTTPRequest(method: method, url: url, headers: headers, body: body, bodyLimit: bodyLimit)
            if let auth { request.headers.append("Authorization: " + auth) }
            if let range { request.range = (range.0, range.1) }
            let r = try transfer.perform(request, tls: tls, onStatus: onStatus, sink: sink)
            guard r.status == 401 else { return r }
            let offered = r.headers("www-authenticate").flatMap(AuthChallenge.parse)
            if let bearer = offered.first(where: { $0.scheme == "bearer" }) {
                challenge = bearer
                if sentFresh { throw rejected(status: 401) }
                refresh = true
                continue
            }
            if let basic = offered.first(where: { $0.scheme == "basic" }) {
                challenge = basic
                if credentials == nil || sentFresh { throw rejected(status: 401) }
                continue
            }
            throw RegistryError(.unauthorized, "\(what): HTTP 401 without a challenge this client can answer")
        }
    }

    /// The error for an unexpected status: its kind from the status, its text from the
    /// distribution spec's error body (`{"errors":[{"code":...,"message":...}]}`) when there is one.
    private func statusError(_ r: HTTPResponse, _ what: String) -> RegistryError {
        var codes: [String] = []
        if let errors = (try? JSON.parse(r.body))?.object?["errors"]?.array {
            for e in errors {
                let code = e.object?["code"]?.string ?? "?"
                let message = e.object?["message"]?.string ?? ""
                codes.append(message.isEmpty ? code : "\(code): \(message)")
            }
        }
        let detail = codes.isEmpty ? "HTTP \(r.status)" : "HTTP \(r.status), \(codes.joined(separator: "; "))"
        switch r.status {
        case 404: return RegistryError(.notFound, "\(what): not found (\(detail))")
        case 401: return rejected(status: 401)
        case 403: return RegistryError(.denied, "\(what): access denied (\(detail))")
        default: return RegistryError(.protocolViolation, "\(what): the registry answered \(detail)")
        }
    }

    private func verify(_ bytes: [UInt8], against expected: Digest?, what: String) throws(RegistryError) -> Digest {
        let algorithm = expected?.algorithm ?? Digest.sha256
        let actual: Digest
        do { actual = try DigestHasher.digest(of: bytes, algorithm: algorithm) } catch { throw RegistryError(error).context(what) }
        if let expected, actual != expected {
            throw RegistryError(.digestMismatch, "\(what): digest mismatch: the registry's bytes hash to \(actual), not \(expected)")
        }
        return actual
    }

    private func parseJSON(_ bytes: [UInt8], _ what: String) throws(StoreError) -> JSON {
        do { return try JSON.parse(bytes) } catch { throw StoreError("\(what) is not valid JSON: \(error.description)") }
    }
}

extension UploadBody {
    func slice(_ offset: Int64, _ length: Int64) -> UploadBody {
        switch self {
        case .bytes(let b): return .bytes(Array(b[Int(offset)..<Int(offset + length)]))
        case .file(let fd, let start, _): return .file(descriptor: fd, offset: start + offset, length: length)
        }
    }
}

extension String {
    func appendingQuery(_ query: String) -> String {
        query.isEmpty ? self : self + (contains("?") ? "&" : "?") + query
    }

    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
