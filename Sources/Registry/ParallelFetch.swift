import Dispatch
import Basics
import OCI
import Synchronization

/// What else a blob's bytes go to while they are written to its file: a layer's index, built
/// in the same pass as the download. Called on the one thread that downloads the blob, in this
/// order: `consume` with each chunk in blob order (after a resumed connection, from where it
/// stopped), `progress` after each; then `verified` once all bytes arrived and matched the
/// blob's size and digest, before the file is renamed into place (throwing there leaves no
/// file); then `placed` once it is. `abandon` instead, after any failure before `placed`: the
/// observer must then leave nothing behind (it may be told more than once). libcurl's callbacks call `consume` and `progress`:
/// they must not wait on the network or on another download (the error they throw is kept and
/// the transfer stops; see CurlTransfer).
public protocol BlobObserver: AnyObject, Sendable {
    func consume(_ chunk: UnsafeRawBufferPointer) throws(StoreError)
    func progress(_ received: Int64)
    func verified() throws(StoreError)
    func placed(at path: String) throws(StoreError)
    func abandon()
}

/// A blob to download and the file it goes to.
public struct BlobDownload: Sendable {
    public var descriptor: Descriptor
    public var path: String
    public var observer: (any BlobObserver)?

    public init(_ descriptor: Descriptor, into path: String, observer: (any BlobObserver)? = nil) {
        self.descriptor = descriptor
        self.path = path
        self.observer = observer
    }
}

extension RegistryClient {
    /// Downloads blobs into their files, each as `fetchBlob(_:from:into:)` does (verified,
    /// renamed into place only when whole), up to `width` at a time: one client, so one
    /// connection and one token, per worker. After a failure no worker starts another blob;
    /// the failure of the earliest blob in `downloads` is thrown once every worker stopped.
    public static func fetch(
        _ downloads: [BlobDownload], from reference: RegistryReference, options: RegistryOptions, width: Int = 4,
        starting: @escaping @Sendable (Descriptor) -> Void = { _ in }
    ) throws(RegistryError) {
        guard !downloads.isEmpty else { return }
        // Shared by the workers: the next index to take, and each download's failure.
        let state = Mutex<(next: Int, failures: [Int: RegistryError])>((0, [:]))
        let group = DispatchGroup()
        for _ in 0..<max(1, min(width, downloads.count)) {
            group.enter()
            DispatchQueue.global().async {
                defer { group.leave() }
                var client: RegistryClient?
                while true {
                    let i: Int? = state.withLock { s in
                        guard s.failures.isEmpty, s.next < downloads.count else { return nil }
                        s.next += 1
                        return s.next - 1
                    }
                    guard let i else { return }
                    do throws(RegistryError) {
                        if client == nil { client = try RegistryClient(for: reference, options: options) }
                        starting(downloads[i].descriptor)
                        try client!.fetchBlob(downloads[i].descriptor, from: reference.repository, into: downloads[i].path,
                                              observer: downloads[i].observer)
                    } catch {
                        downloads[i].observer?.abandon()
                        state.withLock { $0.failures[i] = error }
                    }
                }
            }
        }
        group.wait()
        // Downloads that never started (after a failure) tell their observers too.
        let started = state.withLock { $0.next }
        for d in downloads[started...] { d.observer?.abandon() }
        if let first = state.withLock({ $0.failures.min { $0.key < $1.key }?.value }) { throw first }
    }
}
