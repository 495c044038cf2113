import Foundation
import Basics
import OCI
import LayerView
import Testing

/// The test images, built once per test process by scripts/fixtures/make_image.py into one
/// layout (see that script for what each holds).
public let fixtureLayout: String = {
    let dir = NSTemporaryDirectory() + "umoci-fixtures-" + UUID().uuidString
    let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/fixtures/make_image.py").path
    for c in ["basic", "whiteouts", "formats", "big", "many", "dirlinks", "dirlink-loop", "names", "broken-hardlink", "busybox"] {
        let out = try! run("/usr/bin/env", ["python3", script, dir + "/L", c])
        precondition(out.status == 0, "make_image.py \(c): \(out)")
    }
    return dir + "/L"
}()

/// A copy of the fixture layout at `path`, for a test that changes it.
public func copyOfFixtures(to path: String) throws -> String {
    let out = try run("/bin/cp", ["-a", fixtureLayout, path])
    try #require(out.status == 0, "\(out)")
    return path
}

/// The manifest and config of `tag`, read straight from the files.
public func loadImage(_ layout: String, _ tag: String) throws -> (manifest: JSONObject, config: JSONObject, configDigest: String) {
    let index = try readJSON(layout + "/index.json")
    let entry = try #require(index["manifests"]?.array?.first { $0.object?["annotations"]?.object?["org.opencontainers.image.ref.name"]?.string == tag }?.object)
    let manifest = try readJSON(blobPath(layout, try #require(entry["digest"]?.string)))
    let configDigest = try #require(manifest["config"]?.object?["digest"]?.string)
    return (manifest, try readJSON(blobPath(layout, configDigest)), configDigest)
}

public func blobPath(_ layout: String, _ digest: String) -> String {
    layout + "/blobs/" + digest.replacingOccurrences(of: ":", with: "/")
}

/// Gives a hand-made upper directory the image root's mtime, as the mount server gives a fresh
/// one (OverlayFS.adoptRootMetadata): repack then sees an unchanged root, and writes a "."
/// entry only when the root's own metadata changes (as umoci does).
public func adoptImageRootMtime(_ layout: String, _ tag: String, upper: String, cache: String) throws {
    let opened = try ImageLayout(opening: layout)
    let view = try MergedView.open(layout: opened, image: opened.loadImage(tag: tag), cache: IndexCache(directory: cache))
    ok(try run("/usr/bin/touch", ["-h", "-d", "@\(view.inode(of: MergedView.root).mtime)", upper]))
}
