import Foundation
import Basics
import OCI
import Registry
import Testing
import TestSupport

/// The push side against a real registry, checked by Debian's skopeo reading back what was pushed.
@Suite(.serialized) struct PushTests {
    static let plain = RegistryOptions(tlsVerify: false)

    @Test func uploadsMountsAndAMultiPlatformIndex() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        let reference = try registry.reference("push/app", "multi")
        let client = try RegistryClient(for: reference, options: Self.plain)

        // Two single-layer images, one per platform; one layer monolithic, one in chunks (a file body).
        func blob(_ bytes: [UInt8], _ mediaType: String) throws -> Descriptor {
            Descriptor(mediaType: mediaType, digest: try DigestHasher.digest(of: bytes), size: Int64(bytes.count))
        }
        let layerA = Array(repeating: UInt8(ascii: "a"), count: 70_000)
        let layerB = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let dA = try blob(layerA, MediaType.layerTar), dB = try blob(layerB, MediaType.layerTar)
        #expect(try client.pushBlob(dA, body: .bytes(layerA), to: "push/app") == .uploaded)
        try Data(layerB).write(to: URL(fileURLWithPath: tmp("layerB")))
        let fd = open(tmp("layerB"), O_RDONLY)
        defer { close(fd) }
        #expect(try client.pushBlob(dB, body: .file(descriptor: fd, offset: 0, length: dB.size), to: "push/app", chunkSize: 65_536) == .uploaded)
        #expect(try client.pushBlob(dA, body: .bytes(layerA), to: "push/app") == .existed)
        // Into another repository of the same registry: mounted, not uploaded again.
        #expect(try client.pushBlob(dB, body: .bytes(layerB), to: "push/other", mountFrom: "push/app") == .mounted)
        #expect(try client.blobSize(dB.digest, in: "push/other") == dB.size)

        func image(_ layer: Descriptor, arch: String) throws -> Descriptor {
            let config = Array(#"{"architecture":"\#(arch)","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["\#(layer.digest)"]}}"#.utf8)
            let dc = try blob(config, MediaType.imageConfig)
            try client.pushBlob(dc, body: .bytes(config), to: "push/app")
            let manifest = Array(JSON.object(Manifest(config: dc, layers: [layer]).json).text.utf8)
            let digest = try client.putManifest(manifest, mediaType: MediaType.imageManifest, to: "push/app", reference: try DigestHasher.digest(of: manifest).description)
            var d = Descriptor(mediaType: MediaType.imageManifest, digest: digest, size: Int64(manifest.count))
            var json = d.json
            json["platform"] = .object(JSONObject(["architecture": .string(arch), "os": .string("linux")]))
            d = try Descriptor(json: json)
            return d
        }
        let arm = try image(dA, arch: "arm64"), host = try image(dB, arch: Platform.host.architecture)
        var index = ImageIndex()
        index.setManifests([arm, host])
        let indexBytes = Array(JSON.object(index.json).text.utf8)
        let indexDigest = try client.putManifest(indexBytes, mediaType: MediaType.imageIndex, to: "push/app", reference: "multi")

        // The host's platform is chosen, the other on request; the index is kept.
        let resolved = try client.resolve(reference)
        #expect(resolved.index?.digest == indexDigest)
        #expect(resolved.manifest.digest == host.digest)
        #expect(resolved.parsed.layers == [dB])
        let other = try client.resolve(reference, platform: Platform(os: "linux", architecture: "arm64", variant: "v8"))
        #expect(other.manifest.digest == arm.digest)
        expectError(.notFound, containing: ["no image for linux/s390x", "linux/arm64"]) {
            _ = try client.resolve(reference, platform: Platform(os: "linux", architecture: "s390x"))
        }

        // skopeo reads what was pushed: the index, and the arm64 image through it.
        let raw = try runOK("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--raw", "docker://\(registry.host)/push/app:multi"])
        #expect(try DigestHasher.digest(of: Array(raw.utf8)) == indexDigest)
        let inspected = try JSON.parse(Array(try runOK("/usr/bin/skopeo", ["inspect", "--tls-verify=false", "--override-arch", "arm64",
                                                                           "docker://\(registry.host)/push/app:multi"]).utf8))
        #expect(inspected.object?["Digest"]?.string == indexDigest.description, "skopeo names the index the tag points to")
        #expect(inspected.object?["Layers"]?.strings == [dA.digest.description])
        _ = tmp
    }
}
