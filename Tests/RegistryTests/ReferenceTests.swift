import Basics
import OCI
import Registry
import Testing
import TestSupport

/// References as skopeo names them, and the platform choice from an index.
@Suite struct RegistryReferenceTests {
    @Test func registryReferences() throws {
        let r = try RegistryReference(parsing: "docker://127.0.0.1:5000/team/app:v1.2")
        #expect(r.registry == "127.0.0.1:5000" && r.repository == "team/app" && r.tag == "v1.2" && r.digest == nil)
        #expect(r.description == "docker://127.0.0.1:5000/team/app:v1.2")
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let d = try RegistryReference(parsing: "docker://registry.example.com/a/b/c@\(digest)")
        #expect(d.registry == "registry.example.com" && d.repository == "a/b/c" && d.tag == nil && d.digest?.description == digest)
        #expect(d.manifestReference == digest)
        // Docker Hub's defaults, as skopeo applies them.
        let hub = try RegistryReference(parsing: "docker://debian")
        #expect(hub.registry == "docker.io" && hub.repository == "library/debian" && hub.tag == "latest" && hub.endpoint == "registry-1.docker.io")
        #expect(try RegistryReference(parsing: "docker://user/img:1").repository == "user/img")
        #expect(try RegistryReference(parsing: "docker://localhost/img").registry == "localhost")
        #expect(try RegistryReference(parsing: "docker://[::1]:5000/img").registry == "[::1]:5000")
    }

    @Test func badReferencesAreOneLineErrors() {
        for (text, why) in [
            ("127.0.0.1:5000/app", "starts with docker://"),
            ("docker://", "the name is empty"),
            ("docker://host.io/Upper", "repository component \"Upper\""),
            ("docker://host.io/a//b", "repository component \"\""),
            ("docker://host.io/app:", "tag \"\""),
            ("docker://host.io/app:-x", "tag \"-x\""),
            ("docker://host.io/app:t@sha256:" + String(repeating: "0", count: 64), "a tag and a digest together"),
            ("docker://host.io/app@sha256:abc", "sha256 needs 64"),
            ("docker://bad_host.io:x/app", "registry host"),
            ("docker:///app", "must not start with '/'"),
        ] {
            expectError(.invalidInput, containing: ["invalid image reference", why]) { _ = try RegistryReference(parsing: text) }
        }
    }

    @Test func imageLocations() throws {
        #expect(try ImageLocation(parsing: "layout:tag") == .layout(ImageReference(layout: "layout", tag: "tag")))
        #expect(try ImageLocation(parsing: "oci:layout:tag") == .layout(ImageReference(layout: "layout", tag: "tag")))
        #expect(try ImageLocation(parsing: "oci:/abs/layout") == .layout(ImageReference(layout: "/abs/layout", tag: "latest")))
        #expect(try ImageLocation(parsing: "docker://h.io/a:b") == .registry(RegistryReference(registry: "h.io", repository: "a", tag: "b")))
        expectError(.invalidInput, containing: ["unsupported transport \"containers-storage\""]) {
            _ = try ImageLocation(parsing: "containers-storage://x")
        }
        expectError(.invalidInput, containing: ["tag is empty"]) { _ = try ImageLocation(parsing: "oci:layout:") }
        expectError(.invalidInput, containing: ["no password given"]) { _ = try Credentials(parsing: "alice") }
        #expect(try Credentials(parsing: "alice:a:b") == Credentials(username: "alice", password: "a:b"))
    }

    @Test func platformChoiceFollowsContainersImage() throws {
        func entry(_ arch: String, _ variant: String?, os: String = "linux", _ n: Int) throws -> Descriptor {
            var platform = JSONObject(["architecture": .string(arch), "os": .string(os)])
            if let variant { platform["variant"] = .string(variant) }
            let hex = String(repeating: String(n), count: 64)
            return try Descriptor(json: JSONObject([
                "mediaType": .string(MediaType.imageManifest), "digest": .string("sha256:" + hex), "size": .int(1), "platform": .object(platform),
            ]))
        }
        let list = [try entry("amd64", nil, os: "windows", 1), try entry("arm", "v6", 2), try entry("arm", "v7", 3),
                    try entry("arm64", nil, 4), try entry("amd64", "v2", 5), try entry("amd64", nil, 6)]
        // linux/amd64 takes the linux amd64 entry that names no variant, as containers/image
        // does (not the v2 one before it); windows never.
        #expect(Platform(os: "linux", architecture: "amd64").choose(from: list)?.digest == list[5].digest)
        #expect(Platform(os: "linux", architecture: "amd64").choose(from: Array(list[0...4])) == nil)
        // arm v7 prefers v7 over v6; an arm v6 host never takes v7.
        #expect(Platform(os: "linux", architecture: "arm", variant: "v7").choose(from: list)?.digest == list[2].digest)
        #expect(Platform(os: "linux", architecture: "arm", variant: "v6").choose(from: list)?.digest == list[1].digest)
        #expect(Platform(os: "linux", architecture: "arm", variant: "v5").choose(from: Array(list[1...2])) == nil)
        // arm64 v8 takes an entry that names no variant; an arm64 without variant takes a v8 one.
        #expect(Platform(os: "linux", architecture: "arm64", variant: "v8").choose(from: list)?.digest == list[3].digest)
        #expect(Platform(os: "linux", architecture: "arm64").choose(from: [try entry("arm64", "v8", 7)]) != nil)
        #expect(Platform(os: "linux", architecture: "s390x").choose(from: list) == nil)
    }
}
