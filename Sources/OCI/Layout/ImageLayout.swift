#if canImport(Glibc)
import Glibc
#endif
import Basics

/// An OCI image layout on disk (image-spec/image-layout.md): `oci-layout`, `index.json` and
/// content-addressed `blobs/<alg>/<encoded>`.
///
/// Crash safety: a blob is written to a temporary file inside the layout, hashed as it is
/// written, fsynced and renamed into place; `index.json` is replaced atomically and only after
/// every blob it reaches is durable. A crash at any point leaves the old or the new layout,
/// plus at most a stale temporary file that `gc` removes.
///
/// Concurrency: a command that changes the layout holds an exclusive `flock` on the layout
/// directory for its whole read-modify-write; readers hold a shared one, so `gc` never deletes
/// a blob under them. See `lock(_:)`.
public final class ImageLayout: Sendable {
    public let path: String
    /// The owner of every file and directory this tool creates in the layout (that of the
    /// layout directory, as umoci gives it), or nil when they get it anyway.
    public let owner: FileOwner?

    static let layoutFile = "oci-layout"
    static let indexFile = "index.json"
    static let temporaryPrefix = ".umoci-tmp-"

    /// Opens an existing layout, checking its `oci-layout` file.
    public init(opening path: String) throws(StoreError) {
        self.path = path
        guard Files.isDirectory(path) else {
            throw StoreError(.notFound, "open image layout \(path): not a directory or does not exist")
        }
        let markerFile = path + "/" + ImageLayout.layoutFile
        guard Files.exists(markerFile) else {
            throw StoreError(.notFound, "open image layout \(path): no oci-layout file: not an OCI image layout")
        }
        let marker: JSON
        do {
            marker = try JSON.parse(try Files.read(markerFile))
        } catch {
            throw StoreError(.corrupt, "open image layout \(path): oci-layout: \(error)")
        }
        guard let version = marker.object?["imageLayoutVersion"]?.string else {
            throw StoreError(.corrupt, "open image layout \(path): oci-layout has no imageLayoutVersion")
        }
        guard version.hasPrefix("1.") else {
            throw StoreError(.unsupported, "open image layout \(path): unsupported imageLayoutVersion \(quoted: version)")
        }
        owner = try FileOwner.inherited(from: path)
    }

    /// Creates a new, empty layout at `path`, which must not exist yet (or be an empty directory).
    public static func create(at path: String) throws(StoreError) -> ImageLayout {
        if Files.exists(path) {
            guard Files.isDirectory(path), (try Files.list(path)).isEmpty else {
                throw StoreError(.alreadyExists, "create image layout \(path): path already exists")
            }
        } else {
            try Files.makeDirectory(path)
        }
        // An empty directory given to init may belong to someone else: what goes in is theirs.
        let owner = try FileOwner.inherited(from: path)
        try makeDirectory(path + "/blobs", owner: owner)
        try makeDirectory(path + "/blobs/" + Digest.sha256, owner: owner)
        try Files.writeAtomically(path + "/" + indexFile, ImageIndex().json.serializedValue, owner: owner)
        // oci-layout last: until it exists the directory is not a layout.
        try Files.writeAtomically(path + "/" + layoutFile, JSONObject(["imageLayoutVersion": .string("1.0.0")]).serializedValue,
                                  owner: owner)
        return try ImageLayout(opening: path)
    }

    /// Creates a directory of the layout (if missing), owned like the layout.
    static func makeDirectory(_ path: String, owner: FileOwner?) throws(StoreError) {
        guard !Files.isDirectory(path) else { return }
        try Files.makeDirectory(path)
        try owner?.adopt(path: path)
    }

    /// The directory of `algorithm`'s blobs, created owned like the layout when missing.
    package func makeBlobDirectory(_ algorithm: String) throws(StoreError) {
        try ImageLayout.makeDirectory("\(path)/blobs/\(algorithm)", owner: owner)
    }

    // MARK: Locking

    public typealias LockMode = DirectoryLock.Mode

    /// Takes the layout lock, waiting for other holders. Every command holds it from its first
    /// read of `index.json` to its last write, so concurrent commands serialize and all land.
    public func lock(_ mode: LockMode) throws(StoreError) -> DirectoryLock {
        try DirectoryLock(path, mode, what: "image layout")
    }

    // MARK: Blobs

    public func blobPath(_ digest: Digest) -> String {
        "\(path)/blobs/\(digest.algorithm)/\(digest.encoded)"
    }

    public func hasBlob(_ digest: Digest) -> Bool { Files.exists(blobPath(digest)) }

    /// A blob's bytes, verified against the descriptor's size and digest: the descriptor's
    /// embedded `data` (image-spec 1.1) when it has some, else the blob file. A mismatch is an
    /// error with umoci's phrase (`verified reader digest mismatch` / `size mismatch`).
    public func readBlob(_ descriptor: Descriptor) throws(StoreError) -> [UInt8] {
        let digest = descriptor.digest
        let bytes: [UInt8]
        let what: String
        if let embedded = try descriptor.embeddedData() {
            bytes = embedded
            what = "blob \(digest) (embedded data)"
        } else {
            let file = blobPath(digest)
            guard Files.exists(file) else {
                throw StoreError(.notFound, "blob \(digest) is missing from the image layout (\(file))")
            }
            bytes = try Files.read(file)
            what = "blob \(digest)"
        }
        try ImageLayout.verify(bytes, against: descriptor, what: what)
        return bytes
    }

    static func verify(_ bytes: [UInt8], against descriptor: Descriptor, what: String) throws(StoreError) {
        guard Int64(bytes.count) == descriptor.size else {
            throw StoreError(.corrupt, "\(what): verified reader size mismatch: descriptor says \(descriptor.size) bytes, content has \(bytes.count)")
        }
        let digest = descriptor.digest
        if digest.isVerifiable {
            let actual = try DigestHasher.digest(of: bytes, algorithm: digest.algorithm)
            guard actual == digest else {
                throw StoreError(.corrupt, "\(what): verified reader digest mismatch: content hashes to \(actual)")
            }
        }
    }

    public func readJSONBlob(_ descriptor: Descriptor) throws(StoreError) -> JSON {
        let bytes = try readBlob(descriptor)
        do {
            return try JSON.parse(bytes)
        } catch {
            throw StoreError(.corrupt, "blob \(descriptor.digest): \(error)")
        }
    }

    /// Stores `bytes` as a sha256 blob (a no-op when it is already there) and returns its descriptor.
    @discardableResult
    public func putBlob(_ bytes: [UInt8], mediaType: String) throws(StoreError) -> Descriptor {
        let digest = try DigestHasher.digest(of: bytes)
        let target = blobPath(digest)
        if !Files.exists(target) {
            try makeBlobDirectory(digest.algorithm)
            let temp = path + "/" + Files.temporaryName(prefix: ImageLayout.temporaryPrefix)
            let fd = try Files.open(temp, O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            do throws(StoreError) {
                defer { close(fd) }
                try owner?.adopt(fd: fd, path: temp)
                try Files.writeAll(fd, bytes, path: temp)
                try Files.fsync(fd, path: temp)
                try Files.rename(temp, target)
            } catch {
                unlink(temp)
                throw error
            }
            try Files.fsyncDirectory("\(path)/blobs/\(digest.algorithm)")
        }
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
    }

    /// Stores a JSON document as Go's json.Marshal writes it.
    @discardableResult
    public func putJSONBlob(_ object: JSONObject, mediaType: String) throws(StoreError) -> Descriptor {
        try putBlob(object.serializedValue, mediaType: mediaType)
    }

    // MARK: index.json

    public func readIndex() throws(StoreError) -> ImageIndex {
        let file = path + "/" + ImageLayout.indexFile
        let bytes = try Files.read(file)
        let json: JSON
        do {
            json = try JSON.parse(bytes)
        } catch {
            throw StoreError(.corrupt, "parse \(file): \(error)")
        }
        return try ImageIndex(json: json, what: file)
    }

    /// Replaces `index.json` atomically. Call only after every blob it reaches is stored.
    public func writeIndex(_ index: ImageIndex) throws(StoreError) {
        try Files.writeAtomically(path + "/" + ImageLayout.indexFile, index.json.serializedValue, owner: owner)
    }
}

extension JSONObject {
    /// Compact serialization plus a newline, as umoci (Go's json.Encoder) writes blobs and
    /// index.json.
    public var serializedValue: [UInt8] { JSON.object(self).serialized() + [0x0A] }
}

extension ImageLayout {
    /// Opens the layout at `path` and runs `body` with its lock held.
    public static func withLocked<T>(_ path: String, _ mode: LockMode, _ body: (ImageLayout) throws -> T) throws -> T {
        let layout = try ImageLayout(opening: path)
        let lock = try layout.lock(mode)
        defer { lock.release() }
        return try body(layout)
    }
}
