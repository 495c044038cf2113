import Foundation
import Basics
import OCI
import Registry
import Testing
import TestSupport

/// TLS (a CA made with openssl here) and htpasswd Basic authentication on Debian's
/// docker-registry; the Bearer token flow through a token-demanding proxy the test starts.
@Suite(.serialized) struct AuthTests {
    @Test func tlsWithTheCAAndBasicCredentials() throws {
        let registry = try TestRegistry(tls: true, users: ["alice": "s3cret:with:colons"])
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        _ = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 50_000)
        try registry.push(layout: tmp("layout"), tag: "t", to: "secure/img", credentials: "alice:s3cret:with:colons")
        let reference = try registry.reference("secure/img", "t")
        let alice = try Credentials(parsing: "alice:s3cret:with:colons")

        // --cert-dir with the CA and --creds: verified TLS, Basic auth.
        let good = RegistryOptions(credentials: alice, certDirectory: registry.certDirectory)
        let client = try RegistryClient(for: reference, options: good)
        let image = try client.resolve(reference)
        _ = try collect { sink in try client.fetchBlob(image.parsed.layers[0], from: "secure/img", to: sink) }

        // Wrong password: one line naming the registry and the user.
        let wrong = RegistryOptions(credentials: Credentials(username: "alice", password: "nope"), certDirectory: registry.certDirectory)
        expectError(.unauthorized, containing: ["registry \(registry.host)", "\"alice\"", "wrong user name or password"]) {
            _ = try RegistryClient(for: reference, options: wrong).resolve(reference)
        }
        // No credentials at all (and no auth file: HOME points at an empty directory).
        let none = RegistryOptions(certDirectory: registry.certDirectory, environment: ["HOME": tmp.path])
        expectError(.unauthorized, containing: ["registry \(registry.host) requires credentials"]) {
            _ = try RegistryClient(for: reference, options: none).resolve(reference)
        }
        // Without the CA: the system store does not know it; the error names host and reason.
        let noCA = RegistryOptions(credentials: alice, environment: ["HOME": tmp.path])
        expectError(.tls, containing: ["TLS with \(registry.host) failed", "certificate"]) {
            _ = try RegistryClient(for: reference, options: noCA).resolve(reference)
        }
        // --tls-verify=false: the self-signed registry is accepted (HTTPS still, no HTTP fallback needed).
        let insecure = RegistryOptions(credentials: alice, tlsVerify: false, environment: ["HOME": tmp.path])
        #expect(try RegistryClient(for: reference, options: insecure).resolve(reference).manifest == image.manifest)
    }

    @Test func clientCertificatesFromTheCertDirectory() throws {
        let registry = try TestRegistry(tls: true, requireClientCertificates: true)
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        // skopeo pushes with the pair too (its --dest-cert-dir reads the same layout).
        let certs = tmp("certs.d")
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        for name in ["client.cert", "client.key"] {
            try FileManager.default.copyItem(atPath: registry.clientPairDirectory + "/" + name, toPath: certs + "/" + name)
        }
        try FileManager.default.copyItem(atPath: registry.certDirectory + "/ca.crt", toPath: certs + "/ca.crt")
        _ = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 1000)
        try runOK("/usr/bin/skopeo", ["copy", "--quiet", "--dest-cert-dir", certs, "oci:\(tmp("layout")):t", "docker://\(registry.host)/cc/img:t"])
        let reference = try registry.reference("cc/img", "t")
        _ = try RegistryClient(for: reference, options: RegistryOptions(certDirectory: certs)).resolve(reference)
        // The CA alone: the server refuses the handshake.
        expectError(.tls, containing: ["TLS with \(registry.host) failed"]) {
            _ = try RegistryClient(for: reference, options: RegistryOptions(certDirectory: registry.certDirectory)).resolve(reference)
        }
        // A certificate without its key is refused before any request.
        try FileManager.default.removeItem(atPath: certs + "/client.key")
        expectError(.invalidInput, containing: ["client certificate \(certs)/client.cert has no key"]) {
            _ = try RegistryClient(for: reference, options: RegistryOptions(certDirectory: certs))
        }
    }

    @Test func credentialsFromAuthFilesInSkopeosOrder() throws {
        let registry = try TestRegistry(tls: true, users: ["bob": "pw"])
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        _ = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 1000)
        try registry.push(layout: tmp("layout"), tag: "t", to: "team/app", credentials: "bob:pw")
        let reference = try registry.reference("team/app", "t")
        func authFile(_ path: String, _ entries: [String: String]) throws {
            var auths = JSONObject()
            for (key, creds) in entries { auths[key] = .object(JSONObject(["auth": .string(Base64.encode(Array(creds.utf8)))])) }
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try JSON.object(JSONObject(["auths": .object(auths)])).text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        func resolves(_ environment: [String: String], authFile: String? = nil) throws {
            let options = RegistryOptions(authFile: authFile, certDirectory: registry.certDirectory, environment: environment)
            _ = try RegistryClient(for: reference, options: options).resolve(reference)
        }
        // ~/.docker/config.json, with the key in its URL form.
        try authFile(tmp("home/.docker/config.json"), ["https://\(registry.host)/v1/": "bob:pw"])
        try resolves(["HOME": tmp("home")])
        // $XDG_RUNTIME_DIR/containers/auth.json comes before it: a wrong password there is used.
        try authFile(tmp("run/containers/auth.json"), [registry.host: "bob:wrong"])
        expectError(.unauthorized, containing: ["\"bob\"", "wrong user name or password"]) {
            try resolves(["HOME": tmp("home"), "XDG_RUNTIME_DIR": tmp("run")])
        }
        // $REGISTRY_AUTH_FILE before both; a repository-scoped key beats the host's.
        try authFile(tmp("reg.json"), [registry.host: "bob:wrong", "\(registry.host)/team/app": "bob:pw"])
        try resolves(["HOME": tmp("home"), "XDG_RUNTIME_DIR": tmp("run"), "REGISTRY_AUTH_FILE": tmp("reg.json")])
        // --authfile alone when given; a missing one is an error naming it.
        try resolves(["XDG_RUNTIME_DIR": tmp("run")], authFile: tmp("home/.docker/config.json"))
        expectError(.invalidInput, containing: ["auth file \(tmp("absent.json"))"]) { try resolves([:], authFile: tmp("absent.json")) }
        try "{not json".write(toFile: tmp("bad.json"), atomically: true, encoding: .utf8)
        expectError(.invalidInput, containing: ["auth file \(tmp("bad.json")) is not valid JSON"]) { try resolves([:], authFile: tmp("bad.json")) }
    }

    @Test func bearerTokensAreFetchedAndRefreshed() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        let (_, layer) = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 200_000)
        try registry.push(layout: tmp("layout"), tag: "t", to: "tok/img")
        let proxy = try TokenProxy(backend: registry.port, user: "carol", password: "pw", usesPerToken: 2, directory: tmp.path)
        defer { proxy.stop() }
        let reference = try RegistryReference(parsing: "docker://127.0.0.1:\(proxy.port)/tok/img:t")

        let client = try RegistryClient(for: reference, options: RegistryOptions(credentials: Credentials(username: "carol", password: "pw"), tlsVerify: false))
        let image = try client.resolve(reference)
        for _ in 0..<5 {
            let bytes = try collect { sink in try client.fetchBlob(layer, from: "tok/img", to: sink) }
            #expect(try DigestHasher.digest(of: bytes) == layer.digest)
        }
        #expect(image.parsed.layers == [layer])
        // Six requests (the manifest, five blobs), a token good for two: the client was
        // refused twice and fetched a new token each time, and never more than it needed.
        let stats = try proxy.stats()
        #expect(stats.tokens == 3, "\(stats)")
        #expect(stats.refused == 2, "\(stats)")
        #expect(stats.scopes.contains("repository:tok/img:pull"), "\(stats)")

        expectError(.unauthorized, containing: ["\"carol\"", "wrong user name or password"]) {
            _ = try RegistryClient(for: reference, options: RegistryOptions(credentials: Credentials(username: "carol", password: "bad"), tlsVerify: false)).resolve(reference)
        }
        expectError(.unauthorized, containing: ["requires credentials"]) {
            _ = try RegistryClient(for: reference, options: RegistryOptions(tlsVerify: false, environment: ["HOME": tmp.path])).resolve(reference)
        }
    }
}

/// A reverse proxy in front of a registry that demands Bearer tokens (python3's http.server):
/// `/token` hands out a token for Basic credentials, good for `usesPerToken` requests, so that
/// a client must take a 401 and fetch a new one; everything else goes to the registry.
final class TokenProxy {
    let server: ServerProcess
    let port: Int
    let statsFile: String

    init(backend: Int, user: String, password: String, usesPerToken: Int, directory: String) throws {
        let script = directory + "/token-proxy.py"
        statsFile = directory + "/token-stats.json"
        try TokenProxy.source.write(toFile: script, atomically: true, encoding: .utf8)
        port = try freePort()
        server = try ServerProcess("/usr/bin/python3", [script, String(port), String(backend), user, password, String(usesPerToken), statsFile],
                                   port: port, log: directory + "/token-proxy.log")
    }

    func stop() { server.stop() }

    func stats() throws -> (tokens: Int, refused: Int, scopes: [String]) {
        let json = try JSON.parse(Array(Data(contentsOf: URL(fileURLWithPath: statsFile))))
        return (Int(json.object?["tokens"]?.int64 ?? 0), Int(json.object?["refused"]?.int64 ?? 0), json.object?["scopes"]?.strings ?? [])
    }

    static let source = #"""
        import base64, http.client, http.server, json, re, secrets, sys, threading, urllib.parse
        port, backend, user, password, uses, stats_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
        lock = threading.Lock()
        tokens = {}
        stats = {"tokens": 0, "refused": 0, "scopes": []}

        def save():
            with open(stats_file + ".tmp", "w") as f:
                json.dump(stats, f)
            import os
            os.replace(stats_file + ".tmp", stats_file)

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *args):
                pass
            def do_GET(self):
                self.handle_any("GET")
            def do_HEAD(self):
                self.handle_any("HEAD")
            def reply(self, status, body, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def token(self):
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
                if self.headers.get("Authorization") != expected or query.get("service") != ["test-registry"]:
                    return self.reply(401, b'{"details":"bad credentials"}')
                token = secrets.token_hex(16)
                with lock:
                    tokens[token] = uses
                    stats["tokens"] += 1
                    stats["scopes"] = sorted(set(stats["scopes"]) | set(query.get("scope", [])))
                    save()
                self.reply(200, json.dumps({"token": token, "expires_in": 300}).encode())
            def handle_any(self, method):
                if self.path.startswith("/token"):
                    return self.token()
                auth = self.headers.get("Authorization", "")
                ok = False
                with lock:
                    if auth.startswith("Bearer ") and tokens.get(auth[7:], 0) > 0:
                        tokens[auth[7:]] -= 1
                        ok = True
                    elif auth.startswith("Bearer "):
                        stats["refused"] += 1
                        save()
                if not ok:
                    m = re.match(r"^/v2/(.+)/(manifests|blobs)/", self.path)
                    scope = f',scope="repository:{m.group(1)}:pull"' if m else ""
                    challenge = f'Bearer realm="http://127.0.0.1:{port}/token",service="test-registry"{scope}'
                    return self.reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
                                      [("WWW-Authenticate", challenge)])
                conn = http.client.HTTPConnection("127.0.0.1", backend)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "connection")}
                conn.request(method, self.path, headers=headers)
                r = conn.getresponse()
                self.send_response(r.status)
                length = None
                for k, v in r.getheaders():
                    if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                        continue
                    if k.lower() == "content-length":
                        length = v
                    self.send_header(k, v)
                if length is None:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if method != "HEAD":
                    while True:
                        chunk = r.read(65536)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                conn.close()

        save()
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
        """#
}
