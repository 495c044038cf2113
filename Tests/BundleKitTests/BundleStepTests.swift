import BundleKit
import Foundation
import Basics
import OCI
import LayerView
import BundleFormat
import Testing
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The extract-mode steps: no FUSE needed.
@Suite struct ExtractedBundleStepTests {
    @Test func unpackExtracts() throws {
        let w = try Workspace()
        let mode = try w.unpack(mode: .extract).run()
        #expect(mode == .extract)
        #expect(readText(w.paths.rootfs + "/etc/hostname") == "test\n")
        let metadata = try w.bundle.metadata
        #expect(metadata.mode == .extract)
        #expect(w.bundle.rootfsState(metadata) == .extracted)
        let manifest = try metadata.fromDescriptorPath().manifest.digest
        #expect(Files.exists(ExtractedBundle.manifestPath(w.paths, manifest)))
        #expect(try readJSON(w.paths.config)["root"]?.object?["path"] == .string("rootfs"))
        #expect(!Files.exists(w.paths.upper))
    }

    @Test func repackWritesTheChange() throws {
        let w = try Workspace()
        try w.unpack(mode: .extract).run()
        try write(w.paths.rootfs + "/etc/added", "added\n")
        #expect(unlink(w.paths.rootfs + "/empty") == 0)
        let layers = try w.layerCount("basic")
        let result = try w.repack(to: "changed").run()
        #expect(result.state == .extracted)
        #expect(result.layer != nil)
        #expect(try w.layerCount("changed") == layers + 1)
        // The changed directory, the new file and a whiteout for the removed one; nothing else.
        let entries = try w.lastLayerEntries("changed")
        #expect(entries.sorted() == [".", "etc/", "etc/added", ".wh.empty"].sorted(), "\(entries)")
        #expect(try w.layerCount("basic") == layers)
    }

    @Test func repackWithoutChangesAddsNoLayer() throws {
        let w = try Workspace()
        try w.unpack(mode: .extract).run()
        var repack = w.repack(to: "same")
        repack.history = { author, empty in History(created: nil, createdBy: "test", author: author, comment: nil, emptyLayer: empty) }
        let result = try repack.run()
        #expect(result.layer == nil)
        let image = try ImageLayout(opening: w.layout).loadImage(tag: "same")
        #expect(image.manifest.layers.count == (try w.layerCount("basic")))
        #expect(image.config.history.last?.emptyLayer == true)
    }

    /// A refreshed extracted bundle compares its rootfs with the new image: the next repack
    /// finds nothing.
    @Test func refreshBundleMakesTheNewImageTheBase() throws {
        let w = try Workspace()
        try w.unpack(mode: .extract).run()
        try write(w.paths.rootfs + "/new", "n\n")
        var repack = w.repack(to: "first")
        repack.refreshBundle = true
        let first = try repack.run()
        #expect(try w.bundle.metadata.fromDescriptorPath().manifest.digest == first.image.manifest.digest)
        #expect(try w.repack(to: "second").run().layer == nil)
    }

    /// A second unpack into a bundle is refused and changes nothing.
    @Test func unpackIntoABundleIsRefused() throws {
        let w = try Workspace()
        try w.unpack(mode: .extract).run()
        let before = snapshot(w.paths.bundle)
        do {
            try w.unpack(mode: .extract).run()
            Issue.record("a second unpack into the bundle succeeded")
        } catch let error as StoreError {
            #expect(error.code == .alreadyExists)
        }
        #expect(snapshot(w.paths.bundle) == before)
    }

    /// A failed unpack (a layer blob missing) removes what it made: a bundle directory it
    /// created, or, in one that existed, its rootfs and files.
    @Test(arguments: [false, true])
    func failedUnpackLeavesNothing(bundleExisted: Bool) throws {
        let w = try Workspace()
        let layout = try ImageLayout(opening: w.layout)
        let layer = try layout.loadImage(tag: "basic").manifest.layers[1]
        #expect(unlink(layout.blobPath(layer.digest)) == 0)
        if bundleExisted { try makeDirectory(w.paths.bundle) }
        #expect(throws: (any Error).self) { try w.unpack(mode: .extract).run() }
        if bundleExisted {
            #expect(try FileManager.default.contentsOfDirectory(atPath: w.paths.bundle) == [])
        } else {
            #expect(!Files.exists(w.paths.bundle))
        }
    }

    /// Mount mode refused (root with maps) falls back to extraction, saying why.
    @Test(.enabled(if: geteuid() == 0, "root's mapped unpack extracts; a user's mounts"))
    func mapsExtractInsteadOfMounting() throws {
        let w = try Workspace()
        var unpack = w.unpack(mode: .mount)
        unpack.mapOptions.uidMappings = [try IdMapping(parsing: "0:100000:4000000", flag: "--uid-map")]
        unpack.mapOptions.gidMappings = [try IdMapping(parsing: "0:100000:4000000", flag: "--gid-map")]
        #expect(try unpack.run() == .extract)
        #expect(w.log.warnings.count == 1, "\(w.log.warnings)")
        #expect(try w.bundle.metadata.mode == .extract)
    }

    /// The base image gone from the layout: repack says which and writes nothing.
    @Test func repackOfAnotherLayoutIsRefused() throws {
        let w = try Workspace()
        try w.unpack(mode: .extract).run()
        let other = w.dir("other")
        ok(try umoci("init", "--layout", other))
        var repack = w.repack(to: "x")
        repack.target = { _ in LayoutTarget(layout: other, tag: "x") }
        let before = snapshot(other)
        do {
            try repack.run()
            Issue.record("repack into a layout without the base image succeeded")
        } catch let error as StoreError {
            #expect(error.code == .notFound)
        }
        #expect(snapshot(other) == before)
    }
}

/// The mount-mode steps, on real FUSE mounts served by the package's umoci; every test
/// unmounts what it mounted, whatever happened.
@Suite(.enabled(if: canMount, "mounting needs root and /dev/fuse"), .serialized)
struct MountedBundleStepTests {
    @Test func unpackMountsAndRepackPacksTheUpperDirectory() throws {
        let w = try Workspace()
        let cleanup = MountedBundle(w.paths.bundle)
        defer { withExtendedLifetime(cleanup) {} }
        #expect(try w.unpack(mode: .mount).run() == .mount)
        let metadata = try w.bundle.metadata
        #expect(w.bundle.rootfsState(metadata) == .mounted)
        #expect(readText(w.paths.rootfs + "/etc/hostname") == "test\n")
        try write(w.paths.rootfs + "/etc/added", "through the mount\n")
        #expect(readText(w.paths.upper + "/etc/added") == "through the mount\n")
        let result = try w.repack(to: "changed").run()
        #expect(result.state == .mounted)
        #expect(try w.lastLayerEntries("changed").contains("etc/added"))
        #expect(w.log.warnings.isEmpty, "\(w.log.warnings)")
    }

    /// Mode detection: mounted, then (after umount) not mounted, then (server killed under a
    /// live mount) a mount whose server is gone; the metadata says mount throughout.
    @Test func rootfsStates() throws {
        let w = try Workspace()
        let cleanup = MountedBundle(w.paths.bundle)
        defer { withExtendedLifetime(cleanup) {} }
        try w.unpack(mode: .mount).run()
        let metadata = try w.bundle.metadata
        #expect(metadata.mode == .mount)
        #expect(w.bundle.rootfsState(metadata) == .mounted)
        #expect(try w.bundle.unmount())
        #expect(w.bundle.rootfsState(metadata) == .notMounted)
        try w.bundle.mount(logLevel: "warn", serverExecutable: ourUmoci)
        #expect(w.bundle.rootfsState(metadata) == .mounted)
        for pid in serverProcesses(of: Mounting.canonical(w.paths.bundle)) { kill(pid, SIGKILL) }
        #expect(serversExit(Mounting.canonical(w.paths.bundle)))
        #expect(w.bundle.rootfsState(metadata) == .serverGone)
        // umount cleans up a mount whose server is gone.
        #expect(try w.bundle.unmount())
        #expect(w.bundle.rootfsState(metadata) == .notMounted)
    }

    /// Files put into the plain rootfs/ of an unmounted bundle are not in upper/: repack
    /// refuses rather than leave them out silently, and writes nothing.
    @Test func strayEntriesAreRefused() throws {
        let w = try Workspace()
        let cleanup = MountedBundle(w.paths.bundle)
        defer { withExtendedLifetime(cleanup) {} }
        try w.unpack(mode: .mount).run()
        #expect(try w.bundle.unmount())
        try write(w.paths.rootfs + "/stray", "not in upper\n")
        let index = try w.index()
        do {
            try w.repack(to: "x").run()
            Issue.record("repack of an unmounted bundle with a stray file succeeded")
        } catch let error as StoreError {
            #expect(error.code == .invalidInput)
        }
        #expect(try w.index() == index)
    }

    /// After a reboot (server gone, nothing mounted): umount and a second unpack fail naming
    /// `umoci mount BUNDLE`; repack (its changes are all in upper/) goes on with a warning
    /// naming it; `mount` brings the bundle back with every change.
    @Test func afterARebootTheStepsNameUmociMount() throws {
        let w = try Workspace()
        let cleanup = MountedBundle(w.paths.bundle)
        defer { withExtendedLifetime(cleanup) {} }
        try w.unpack(mode: .mount).run()
        try write(w.paths.rootfs + "/kept", "before the reboot\n")
        try w.reboot()
        let advice = "umoci mount \(w.paths.bundle)"
        #expect(w.bundle.rootfsState(try w.bundle.metadata) == .notMounted)

        do {
            _ = try w.bundle.unmount()
            Issue.record("umount of an unmounted bundle succeeded")
        } catch let error as StoreError {
            #expect(error.code == .notFound && error.subject == w.paths.rootfs)
            #expect(error.message.contains(advice), "\(error)")
        }
        do {
            try w.unpack(mode: .mount).run()
            Issue.record("unpack into a bundle succeeded")
        } catch let error as StoreError {
            #expect(error.code == .alreadyExists)
            #expect(error.message.contains(advice), "\(error)")
        }

        let result = try w.repack(to: "after").run()
        #expect(result.state == .notMounted)
        #expect(try w.lastLayerEntries("after").contains("kept"))
        #expect(w.log.warnings.contains { $0.contains(advice) }, "\(w.log.warnings)")

        try w.bundle.mount(logLevel: "warn", serverExecutable: ourUmoci)
        #expect(readText(w.paths.rootfs + "/kept") == "before the reboot\n")
        #expect(readText(w.paths.rootfs + "/etc/hostname") == "test\n")
    }

    /// A mount that cannot start (the server exits at once) is rolled back: no mount, no
    /// server, nothing of the bundle left; with mount asked for there is no fallback.
    @Test(arguments: [false, true])
    func failedMountIsRolledBack(bundleExisted: Bool) throws {
        let w = try Workspace()
        let cleanup = MountedBundle(w.paths.bundle)
        defer { withExtendedLifetime(cleanup) {} }
        if bundleExisted { try makeDirectory(w.paths.bundle) }
        var unpack = w.unpack(mode: .mount)
        unpack.serverExecutable = "/bin/false"
        #expect(throws: (any Error).self) { try unpack.run() }
        #expect(!mountedBelow(w.dir.path))
        if bundleExisted {
            #expect(try FileManager.default.contentsOfDirectory(atPath: w.paths.bundle) == [])
        } else {
            #expect(!Files.exists(w.paths.bundle))
        }
    }

    /// The same failure without an explicit mode falls back to extraction, saying why.
    @Test func failedMountFallsBackToExtraction() throws {
        let w = try Workspace()
        let cleanup = MountedBundle(w.paths.bundle)
        defer { withExtendedLifetime(cleanup) {} }
        var unpack = w.unpack(mode: .auto)
        unpack.serverExecutable = "/bin/false"
        #expect(try unpack.run() == .extract)
        #expect(w.log.warnings.count == 1, "\(w.log.warnings)")
        #expect(!mountedBelow(w.dir.path))
        #expect(try w.bundle.metadata.mode == .extract)
        #expect(!Files.exists(w.paths.upper))
        #expect(readText(w.paths.rootfs + "/etc/hostname") == "test\n")
    }
}
