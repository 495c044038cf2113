import CCurl
import Basics
import OCI
#if canImport(Glibc)
import Glibc
#endif

/// libcurl's process-wide state, set up once before the first handle (curl_global_init is not
/// safe to race with itself before 7.84; a Swift global is initialised exactly once).
private let curlGlobal: CURLcode = curl_global_init(Int(CURL_GLOBAL_DEFAULT))

/// What a request sends as its body. A file is read with pread, so the same body can be sent
/// again after a 401 without seeking anything shared.
public enum UploadBody: Sendable {
    case bytes([UInt8])
    case file(descriptor: Int32, offset: Int64, length: Int64)

    var length: Int64 {
        switch self {
        case .bytes(let b): return Int64(b.count)
        case .file(_, _, let length): return length
        }
    }
}

/// How the TLS peer is checked and which client certificate is shown (see `TLSSettings.load`).
public struct TLSSettings: Sendable, Equatable {
    /// false: no certificate or host name check, and plain HTTP is tried when HTTPS fails.
    public var verify: Bool
    /// Extra CA certificates (PEM), trusted besides the system store.
    public var certificateAuthorities: [UInt8]
    public var clientCertificate: String?
    public var clientKey: String?

    public init(verify: Bool = true, certificateAuthorities: [UInt8] = [], clientCertificate: String? = nil, clientKey: String? = nil) {
        self.verify = verify
        self.certificateAuthorities = certificateAuthorities
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
    }
}

struct HTTPRequest {
    var method: String
    var url: String
    var headers: [String] = []
    var body: UploadBody?
    /// `Range: bytes=lower-[upper]`, upper inclusive as HTTP has it.
    var range: (lower: Int64, upper: Int64?)?
    /// A HEAD or a request whose body is read into `HTTPResponse.body` (manifests, tokens,
    /// upload answers) rather than streamed to a sink.
    var bodyLimit: Int = 4 << 20
}

struct HTTPResponse {
    var status: Int
    /// Header names lowercased, in the order received, of the final response (after redirects).
    var headers: [(name: String, value: String)]
    /// The body of a response that was not streamed to a sink, or of any error response
    /// (at most `bodyLimit` bytes).
    var body: [UInt8]
    /// The URL that answered, after redirects.
    var url: String

    func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.last { $0.name == lower }?.value
    }

    func headers(_ name: String) -> [String] {
        let lower = name.lowercased()
        return headers.filter { $0.name == lower }.map(\.value)
    }

    var isSuccess: Bool { (200..<300).contains(status) }
}

/// A sink's way to end a transfer early without an error: `CurlTransfer.perform` returns
/// normally when the sink throws it (a Range a registry ignored, once the bytes wanted arrived).
struct StopTransfer: Error {}

/// The state one transfer's C callbacks share with `CurlTransfer.perform`. Owned by the thread
/// that runs `perform`: libcurl calls the callbacks on that thread, inside curl_easy_perform.
private final class TransferState {
    var status = 0
    var headers: [(name: String, value: String)] = []
    var body: [UInt8] = []
    let bodyLimit: Int
    let sink: ((UnsafeRawBufferPointer) throws -> Void)?
    /// Told the final response's status and headers once, before the sink's first bytes.
    let onStatus: ((HTTPResponse) -> Void)?
    var statusReported = false
    /// What the sink threw; the write callback returns 0 so that libcurl stops (CURLE_WRITE_ERROR).
    var sinkError: (any Error)?
    let upload: UploadBody?
    var uploaded: Int64 = 0
    var uploadError: Int32 = 0

    init(sink: ((UnsafeRawBufferPointer) throws -> Void)?, onStatus: ((HTTPResponse) -> Void)?, bodyLimit: Int, upload: UploadBody?) {
        self.sink = sink
        self.onStatus = onStatus
        self.bodyLimit = bodyLimit
        self.upload = upload
    }
}

/// libcurl calls this for every header line of every response, redirects and 100 Continue
/// included: a status line starts a new header block.
private let headerCallback: umoci_curl_data_fn = { buffer, size, count, context in
    let n = size * count
    guard let buffer, let context else { return n }
    let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: buffer, count: n), as: UTF8.self)
        .trimmingSuffix(while: \.isNewline)
    if line.hasPrefix("HTTP/") {
        let parts = line.split(separator: " ", maxSplits: 2)
        state.status = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        state.headers.removeAll()
    } else if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingPrefix { $0 == " " || $0 == "\t" }
        state.headers.append((name, String(value)))
    }
    return n
}

/// Body bytes of the final response: to the sink for a 2xx answer, else kept (bounded) so the
/// error can be read. Never throws into libcurl: a sink's error is kept and the transfer stops.
private let writeCallback: umoci_curl_data_fn = { buffer, size, count, context in
    let n = size * count
    guard let context else { return 0 }
    let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
    let chunk = UnsafeRawBufferPointer(start: buffer, count: n)
    if let sink = state.sink, (200..<300).contains(state.status) {
        if !state.statusReported {
            state.statusReported = true
            state.onStatus?(HTTPResponse(status: state.status, headers: state.headers, body: [], url: ""))
        }
        do {
            try sink(chunk)
        } catch {
            state.sinkError = error
            return 0
        }
        return n
    }
    guard state.body.count + n <= state.bodyLimit else {
        state.sinkError = RegistryError(.protocolViolation, "response body larger than \(state.bodyLimit) bytes")
        return 0
    }
    state.body.append(contentsOf: chunk)
    return n
}

private let readCallback: umoci_curl_data_fn = { buffer, size, count, context in
    guard let buffer, let context else { return umoci_curl_read_abort() }
    let state = Unmanaged<TransferState>.fromOpaque(context).takeUnretainedValue()
    guard let upload = state.upload else { return 0 }
    let want = min(Int64(size * count), upload.length - state.uploaded)
    guard want > 0 else { return 0 }
    switch upload {
    case .bytes(let bytes):
        bytes.withUnsafeBytes { all in
            UnsafeMutableRawPointer(buffer).copyMemory(from: all.baseAddress! + Int(state.uploaded), byteCount: Int(want))
        }
        state.uploaded += want
        return Int(want)
    case .file(let fd, let offset, _):
        let got = pread(fd, buffer, Int(want), off_t(offset + state.uploaded))
        guard got > 0 else {
            state.uploadError = got < 0 ? errno : EIO
            return umoci_curl_read_abort()
        }
        state.uploaded += Int64(got)
        return got
    }
}

/// One libcurl easy handle: its connections are kept between requests (keep-alive, one TLS
/// handshake per host). Not safe for concurrent use: one owner at a time.
final class CurlTransfer {
    private let easy: UnsafeMutableRawPointer
    private let errorBuffer: UnsafeMutablePointer<CChar>
    let userAgent: String

    init(userAgent: String) throws(RegistryError) {
        guard curlGlobal == CURLE_OK, let easy = curl_easy_init() else {
            throw RegistryError(.local, "libcurl cannot be initialised")
        }
        self.easy = easy
        self.userAgent = userAgent
        errorBuffer = .allocate(capacity: umoci_curl_error_size())
        errorBuffer.initialize(repeating: 0, count: umoci_curl_error_size())
    }

    deinit {
        curl_easy_cleanup(easy)
        errorBuffer.deallocate()
    }

    /// Runs one request to completion. A 2xx body goes to `sink` (or into the response when
    /// there is none); redirects are followed. Throws only for a transfer that failed: any
    /// HTTP status is returned, for the caller to judge.
    func perform(
        _ request: HTTPRequest, tls: TLSSettings, onStatus: ((HTTPResponse) -> Void)? = nil,
        sink: ((UnsafeRawBufferPointer) throws -> Void)? = nil
    ) throws(RegistryError) -> HTTPResponse {
        curl_easy_reset(easy)
        errorBuffer[0] = 0
        let state = TransferState(sink: sink, onStatus: onStatus, bodyLimit: request.bodyLimit, upload: request.body)
        let context = Unmanaged.passUnretained(state).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        // Expect: 100-continue costs a round trip per upload; registries answer at once anyway.
        for h in request.headers + ["Expect:"] { headerList = curl_slist_append(headerList, h) }

        var rc = CURLE_OK
        func set(_ r: CURLcode) { if rc == CURLE_OK { rc = r } }
        set(umoci_curl_set_string(easy, CURLOPT_URL, request.url))
        set(umoci_curl_set_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer))
        // No signals: several transfers may run on several threads (a resolver timeout would
        // otherwise use SIGALRM).
        set(umoci_curl_set_long(easy, CURLOPT_NOSIGNAL, 1))
        set(umoci_curl_set_string(easy, CURLOPT_PROTOCOLS_STR, "http,https"))
        set(umoci_curl_set_string(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https"))
        // Blob GETs are redirected to storage (S3, a CDN); libcurl does not send our
        // Authorization header to another host (CURLOPT_UNRESTRICTED_AUTH stays off).
        set(umoci_curl_set_long(easy, CURLOPT_FOLLOWLOCATION, 1))
        set(umoci_curl_set_long(easy, CURLOPT_MAXREDIRS, 10))
        set(umoci_curl_set_long(easy, CURLOPT_CONNECTTIMEOUT, 30))
        // A transfer that moves nothing for 60 s is dead (a registry that hangs mid-blob).
        set(umoci_curl_set_long(easy, CURLOPT_LOW_SPEED_LIMIT, 1))
        set(umoci_curl_set_long(easy, CURLOPT_LOW_SPEED_TIME, 60))
        set(umoci_curl_set_string(easy, CURLOPT_USERAGENT, userAgent))
        set(umoci_curl_set_list(easy, CURLOPT_HTTPHEADER, headerList))
        set(umoci_curl_set_callback(easy, CURLOPT_HEADERFUNCTION, headerCallback))
        set(umoci_curl_set_pointer(easy, CURLOPT_HEADERDATA, context))
        set(umoci_curl_set_callback(easy, CURLOPT_WRITEFUNCTION, writeCallback))
        set(umoci_curl_set_pointer(easy, CURLOPT_WRITEDATA, context))
        set(umoci_curl_set_long(easy, CURLOPT_SSL_VERIFYPEER, tls.verify ? 1 : 0))
        set(umoci_curl_set_long(easy, CURLOPT_SSL_VERIFYHOST, tls.verify ? 2 : 0))
        if !tls.certificateAuthorities.isEmpty {
            // In addition to the system store, which stays CURLOPT_CAINFO's default.
            set(tls.certificateAuthorities.withUnsafeBytes {
                umoci_curl_set_blob(easy, CURLOPT_CAINFO_BLOB, $0.baseAddress, $0.count)
            })
        }
        if let cert = tls.clientCertificate { set(umoci_curl_set_string(easy, CURLOPT_SSLCERT, cert)) }
        if let key = tls.clientKey { set(umoci_curl_set_string(easy, CURLOPT_SSLKEY, key)) }
        if let range = request.range {
            set(umoci_curl_set_string(easy, CURLOPT_RANGE, "\(range.lower)-\(range.upper.map(String.init) ?? "")"))
        }
        switch request.method {
        case "GET": break
        case "HEAD": set(umoci_curl_set_long(easy, CURLOPT_NOBODY, 1))
        default: set(umoci_curl_set_string(easy, CURLOPT_CUSTOMREQUEST, request.method))
        }
        if let body = request.body {
            set(umoci_curl_set_long(easy, CURLOPT_UPLOAD, 1))
            set(umoci_curl_set_offset(easy, CURLOPT_INFILESIZE_LARGE, body.length))
            set(umoci_curl_set_callback(easy, CURLOPT_READFUNCTION, readCallback))
            set(umoci_curl_set_pointer(easy, CURLOPT_READDATA, context))
        } else if request.method == "POST" || request.method == "PUT" || request.method == "PATCH" {
            // An empty body, said explicitly: some registries want Content-Length on POST.
            set(umoci_curl_set_long(easy, CURLOPT_UPLOAD, 1))
            set(umoci_curl_set_offset(easy, CURLOPT_INFILESIZE_LARGE, 0))
        }
        guard rc == CURLE_OK else {
            throw RegistryError(.local, "libcurl rejected an option: \(String(cString: curl_easy_strerror(rc)))")
        }

        let result = withExtendedLifetime(state) { curl_easy_perform(easy) }
        var effective: UnsafePointer<CChar>?
        _ = umoci_curl_get_string(easy, CURLINFO_EFFECTIVE_URL, &effective)
        let url = effective.map { String(cString: $0) } ?? request.url
        if result != CURLE_OK {
            if result == CURLE_WRITE_ERROR, let error = state.sinkError {
                if error is StopTransfer {
                    return HTTPResponse(status: state.status, headers: state.headers, body: state.body, url: url)
                }
                if let error = error as? RegistryError { throw error }
                if let error = error as? StoreError { throw RegistryError(error, kind: .local) }
                throw RegistryError(.local, "\(error)")
            }
            if result == CURLE_ABORTED_BY_CALLBACK || result == CURLE_READ_ERROR, state.uploadError != 0 {
                throw RegistryError(.local, "reading the upload body: \(String(cString: strerror(state.uploadError)))")
            }
            throw transportError(result, url: url)
        }
        return HTTPResponse(status: state.status, headers: state.headers, body: state.body, url: url)
    }

    /// The failure of a transfer as one line naming the host and libcurl's own reason.
    private func transportError(_ code: CURLcode, url: String) -> RegistryError {
        let detail = errorBuffer[0] != 0 ? String(cString: errorBuffer) : String(cString: curl_easy_strerror(code))
        let host = hostPort(of: url)
        // A server that refuses the client during the TLS handshake (no client certificate, or
        // one it does not trust) just closes the connection: libcurl sees a failed send or
        // receive before the handshake completed, and says nothing about TLS.
        var handshakeDone: Int64 = 0
        _ = umoci_curl_get_offset(easy, CURLINFO_APPCONNECT_TIME_T, &handshakeDone)
        var responseCode = 0
        _ = umoci_curl_get_long(easy, CURLINFO_RESPONSE_CODE, &responseCode)
        if url.hasPrefix("https://"), responseCode == 0,
           code == CURLE_SEND_ERROR || code == CURLE_RECV_ERROR || code == CURLE_GOT_NOTHING {
            let when = handshakeDone == 0 ? "during the TLS handshake" : "right after the TLS handshake"
            return RegistryError(.tls, "TLS with \(host) failed: the server closed the connection \(when) (\(detail)); a registry that wants a client certificate does this (--cert-dir)")
        }
        switch code {
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
             CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_CRL_BADFILE, CURLE_SSL_PINNEDPUBKEYNOTMATCH,
             CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_SHUTDOWN_FAILED, CURLE_USE_SSL_FAILED:
            return RegistryError(.tls, "TLS with \(host) failed: \(detail)")
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY, CURLE_OPERATION_TIMEDOUT,
             CURLE_GOT_NOTHING, CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM:
            return RegistryError(.unreachable, "cannot reach \(host): \(detail)")
        default:
            return RegistryError(.protocolViolation, "request to \(host) failed: \(detail)")
        }
    }

    /// `application/x-www-form-urlencoded` escaping of a query parameter value.
    func escape(_ value: String) -> String {
        guard let escaped = curl_easy_escape(easy, value, Int32(value.utf8.count)) else { return value }
        defer { curl_free(escaped) }
        return String(cString: escaped)
    }
}

/// `host:port` of a URL, for messages (the port as written, or the scheme's default).
func hostPort(of url: String) -> String {
    var rest = Substring(url)
    var defaultPort = ""
    if let colon = rest.firstIndex(of: ":"), rest[colon...].hasPrefix("://") {
        defaultPort = rest[..<colon] == "https" ? "443" : "80"
        rest = rest[rest.index(colon, offsetBy: 3)...]
    }
    let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
    let hostPart = authority.split(separator: "@").last.map(String.init) ?? String(authority)
    if hostPart.hasSuffix("]") || !hostPart.contains(":") { return defaultPort.isEmpty ? hostPart : "\(hostPart):\(defaultPort)" }
    return hostPart
}

extension String {
    func trimmingSuffix(while predicate: (Character) -> Bool) -> String {
        var s = Substring(self)
        while let last = s.last, predicate(last) { s = s.dropLast() }
        return String(s)
    }
}
