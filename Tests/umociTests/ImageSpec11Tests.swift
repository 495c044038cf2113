import Foundation
import OCI
import Testing
import TestSupport

/// image-spec 1.1 content in a layout: artifactType, subject, embedded data, media types this
/// tool does not know. umoci resolves a tag to every "target" below index.json (a manifest or
/// any blob it cannot parse, oci/casext/mediatype/parse.go IsTarget), `tag` copies whatever the
/// tag names, the image commands refuse a target that is no image manifest (stat.go: "descriptor
/// does not point to ispec.MediaTypeImageManifest: not implemented"), and gc keeps everything
/// its descriptor walk reaches, including a manifest's subject (oci/casext/map.go follows
/// every ispec.Descriptor field, pointers included).
@Suite struct ImageSpec11Tests {
    @Test func tagOfAnUnknownMediaTypeIsCarriedAlong() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        let layout = try ImageLayout(opening: L)
        let blob = try layout.putBlob(Array("opaque".utf8), mediaType: "application/vnd.example.blob")
        try layout.setTag("thing", to: blob)
        ok(try umoci("tag", "--image", L + ":thing", "copy"))
        let copy = try #require(try layout.readIndex().manifests.first { $0.refName == "copy" })
        #expect(copy.digest == blob.digest && copy.mediaType == "application/vnd.example.blob")
        #expect(ok(try umoci("ls", "--layout", L)) == "thing\ncopy\n")
        fails(try umoci("stat", "--image", L + ":copy"), containing: "not implemented: application/vnd.example.blob")
        fails(try umoci("config", "--image", L + ":copy", "--author", "x"), containing: "does not point to ispec.MediaTypeImageManifest")
        ok(try umoci("gc", "--layout", L))
        #expect(layout.hasBlob(blob.digest))
    }

    @Test func gcKeepsWhatASubjectReaches() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":t"))
        let layout = try ImageLayout(opening: L)
        let image = try layout.resolveImage(tag: "t")
        let config = try layout.loadImage(image).manifest.config
        let subject = JSON.object(image.manifest.withRefName(nil).json).text
        let referrer = try layout.putBlob(Array(#"""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="},"layers":[{"mediaType":"application/vnd.example.sig.payload","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="}],"subject":\#(subject)}
            """#.utf8), mediaType: MediaType.imageManifest)
        try layout.setTag("sig", to: referrer)
        ok(try umoci("rm", "--image", L + ":t"))
        ok(try umoci("gc", "--layout", L))
        // The image is only reachable as the referrer's subject: it stays, and no blob file
        // was needed for the embedded empty config and payload.
        #expect(layout.hasBlob(image.manifest.digest) && layout.hasBlob(config.digest) && layout.hasBlob(referrer.digest))
        // An artifact is no image: the image commands refuse it (umoci's mutator: "unknown
        // config blob type") and leave the layout alone.
        let beforeEdit = snapshot(L)
        fails(try umoci("config", "--image", L + ":sig", "--author", "x"), containing: "unknown config blob type: application/vnd.oci.empty.v1+json")
        fails(try umoci("raw", "unpack", "--image", L + ":sig", dir("r")), containing: "unknown config blob type")
        #expect(snapshot(L) == beforeEdit)
        let stat = ok(try umoci("stat", "--image", L + ":sig"))
        #expect(stat.contains("Artifact Type: application/vnd.example.sig\n"))
        #expect(stat.contains("Subject:\n\tDescriptor:\n\t\tMedia Type: application/vnd.oci.image.manifest.v1+json\n\t\tDigest: \(image.manifest.digest)\n"))

        // Without its subject, the referrer's walk fails and gc deletes nothing (umoci's walk
        // fails on the missing blob too).
        try FileManager.default.removeItem(atPath: layout.blobPath(image.manifest.digest))
        let before = snapshot(L)
        fails(try umoci("gc", "--layout", L), containing: "is missing")
        #expect(snapshot(L) == before)
    }

    /// Fields of image-spec 1.1 survive an edit of the image: the new manifest keeps its
    /// artifactType, subject and annotations, the config its unknown fields.
    @Test func editsCarryArtifactTypeAndSubject() throws {
        let dir = TemporaryDirectory()
        let L = dir("L")
        ok(try umoci("init", "--layout", L))
        ok(try umoci("new", "--image", L + ":base"))
        let layout = try ImageLayout(opening: L)
        let base = try layout.resolveImage(tag: "base")
        var manifest = try layout.loadImage(base).manifest.json
        manifest["artifactType"] = .string("application/vnd.example.kind")
        manifest["subject"] = .object(base.manifest.withRefName(nil).json)
        let edited = try layout.putJSONBlob(manifest, mediaType: MediaType.imageManifest)
        try layout.setTag("t", to: edited)
        ok(try umoci("config", "--image", L + ":t", "--config.user", "u"))
        let after = try loadImage(L, "t")
        #expect(after.manifest["artifactType"] == .string("application/vnd.example.kind"))
        #expect(after.manifest["subject"] == .object(base.manifest.withRefName(nil).json))
        #expect(after.config["config"]?.object?["User"] == .string("u"))
    }
}
