import Foundation
import Basics
import OCI
import Registry
import Testing
import TestSupport

/// Pulls from a real registry (Debian's docker-registry over plain HTTP), images pushed into it
/// by Debian's skopeo from layouts written by scripts/fixtures/make_image.py.
@Suite(.serialized) struct PullTests {
    static let plain = RegistryOptions(tlsVerify: false)

    @Test func resolvesAndFetchesEveryBlobAsSkopeoPushedIt() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        try runOK("/usr/bin/python3", [makeImage, tmp("layout"), "basic", "v1"])
        try registry.push(layout: tmp("layout"), tag: "v1-gzip", to: "test/basic", as: "v1")

        let reference = try registry.reference("test/basic", "v1")
        let client = try RegistryClient(for: reference, options: Self.plain)
        let image = try client.resolve(reference)
        #expect(image.index == nil)
        #expect(image.manifest.mediaType == MediaType.imageManifest)
        // skopeo had no reason to change the manifest: the registry serves the layout's own.
        let index = try ImageIndex(json: try JSON.parse(Array(Data(contentsOf: URL(fileURLWithPath: tmp("layout/index.json"))))), what: "index")
        let local = try #require(index.manifests.first { $0.refName == "v1-gzip" })
        #expect(image.manifest.digest == local.digest)
        #expect(image.parsed.layers.count == 3)

        // Every blob arrives with the bytes skopeo read from the layout.
        for descriptor in [image.parsed.config] + image.parsed.layers {
            let bytes = try collect { sink in try client.fetchBlob(descriptor, from: "test/basic", to: sink) }
            let local = try Array(Data(contentsOf: URL(fileURLWithPath: tmp("layout/blobs/sha256/\(descriptor.digest.encoded)"))))
            #expect(bytes == local, "blob \(descriptor.digest)")
            #expect(try client.blobSize(descriptor.digest, in: "test/basic") == descriptor.size)
        }

        // Pinned by digest: the same manifest; HEAD agrees.
        let pinned = image.pinnedReference
        #expect(pinned.description == "docker://\(registry.host)/test/basic@\(image.manifest.digest)")
        #expect(try client.resolve(pinned).manifest == image.manifest)
        let head = try #require(try client.headManifest("test/basic", reference: "v1"))
        #expect(head.digest == image.manifest.digest && head.size == Int64(image.manifest.bytes.count))
        #expect(try client.headManifest("test/basic", reference: "nope") == nil)

        // Into a file: atomically, nothing else left in the directory.
        let layer = image.parsed.layers[0]
        try FileManager.default.createDirectory(atPath: tmp("store"), withIntermediateDirectories: true)
        try client.fetchBlob(layer, from: "test/basic", into: tmp("store/blob"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp("store")) == ["blob"])
        #expect(try DigestHasher.digest(of: Array(Data(contentsOf: URL(fileURLWithPath: tmp("store/blob"))))) == layer.digest)
    }

    @Test func blobsFetchedInParallelEachVerified() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        try runOK("/usr/bin/python3", [makeImage, tmp("layout"), "basic", "v1"])
        try registry.push(layout: tmp("layout"), tag: "v1-gzip", to: "par/basic", as: "v1")
        let reference = try registry.reference("par/basic", "v1")
        let image = try RegistryClient(for: reference, options: Self.plain).resolve(reference)
        try FileManager.default.createDirectory(atPath: tmp("store"), withIntermediateDirectories: true)
        let blobs = [image.parsed.config] + image.parsed.layers
        let downloads = blobs.map { BlobDownload($0, into: tmp("store/\($0.digest.encoded)")) }
        try RegistryClient.fetch(downloads, from: reference, options: Self.plain, width: 3)
        for blob in blobs {
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: tmp("store/\(blob.digest.encoded)"))))
            #expect(try DigestHasher.digest(of: bytes) == blob.digest)
        }
        // A blob the registry lacks: its error, and no temporary file left by any worker.
        let missing = Descriptor(mediaType: MediaType.layerTarGzip, digest: try DigestHasher.digest(of: [9]), size: 1)
        try FileManager.default.createDirectory(atPath: tmp("store2"), withIntermediateDirectories: true)
        expectError(.notFound, containing: ["blob \(missing.digest)"]) {
            try RegistryClient.fetch([BlobDownload(missing, into: tmp("store2/missing"))] + blobs.map { BlobDownload($0, into: tmp("store2/\($0.digest.encoded)")) },
                                     from: reference, options: Self.plain, width: 2)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: tmp("store2")).allSatisfy { !$0.hasPrefix(".download-") && $0 != "missing" })
    }

    @Test func rangeReadsGiveExactlyTheBytesAsked() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        let (_, layer) = try writeRandomImage(layout: tmp("layout"), tag: "r", size: 300_000)
        try registry.push(layout: tmp("layout"), tag: "r", to: "test/range")
        let reference = try registry.reference("test/range", "r")
        let client = try RegistryClient(for: reference, options: Self.plain)
        let whole = try Array(Data(contentsOf: URL(fileURLWithPath: tmp("layout/blobs/sha256/\(layer.digest.encoded)"))))
        for range: Range<Int64> in [0..<1, 1000..<70_000, layer.size - 1..<layer.size, 0..<layer.size] {
            var honoured = false
            let bytes = try collect { sink in honoured = try client.fetchBlobRange(layer.digest, from: "test/range", range: range, to: sink) }
            #expect(honoured, "distribution honours Range")
            #expect(bytes == Array(whole[Int(range.lowerBound)..<Int(range.upperBound)]), "\(range)")
        }
    }

    @Test func dockerSchema2ManifestsAreNegotiated() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        try runOK("/usr/bin/python3", [makeImage, tmp("layout"), "whiteouts", "w"])
        try registry.push(layout: tmp("layout"), tag: "w-gzip", to: "test/docker", as: "w", format: "v2s2")
        let reference = try registry.reference("test/docker", "w")
        let client = try RegistryClient(for: reference, options: Self.plain)
        let image = try client.resolve(reference)
        #expect(image.manifest.mediaType == MediaType.dockerManifest)
        #expect(image.parsed.config.mediaType == MediaType.dockerConfig)
        for layer in image.parsed.layers {
            #expect(layer.mediaType == MediaType.dockerLayerGzip)
            _ = try collect { sink in try client.fetchBlob(layer, from: "test/docker", to: sink) }
        }
    }

    @Test func unknownTagsAndRepositoriesAreClearErrors() throws {
        let registry = try TestRegistry()
        defer { registry.stop() }
        let tmp = TemporaryDirectory()
        _ = try writeRandomImage(layout: tmp("layout"), tag: "t", size: 1000)
        try registry.push(layout: tmp("layout"), tag: "t", to: "test/known")
        let unknownTag = try registry.reference("test/known", "missing")
        let client = try RegistryClient(for: unknownTag, options: Self.plain)
        expectError(.notFound, containing: ["test/known:missing", "MANIFEST_UNKNOWN", registry.host]) { _ = try client.resolve(unknownTag) }
        let unknownRepo = try registry.reference("test/unknown", "t")
        expectError(.notFound, containing: ["test/unknown:t", "not found"]) { _ = try client.resolve(unknownRepo) }
        let missingBlob = Descriptor(mediaType: MediaType.layerTar, digest: try DigestHasher.digest(of: [1, 2, 3]), size: 3)
        expectError(.notFound, containing: ["blob \(missingBlob.digest)", "BLOB_UNKNOWN"]) {
            _ = try collect { sink in try client.fetchBlob(missingBlob, from: "test/known", to: sink) }
        }
    }
}
