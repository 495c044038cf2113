import Dispatch
import Basics
import OCI
import Synchronization

/// A blob to download and the file it goes to.
public struct BlobDownload: Sendable {
    public var descriptor: Descriptor
    public var path: String

    public init(_ descriptor: Descriptor, into path: String) {
        self.descriptor = descriptor
        self.path = path
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
                        try client!.fetchBlob(downloads[i].descriptor, from: reference.repository, into: downloads[i].path)
                    } catch {
                        state.withLock { $0.failures[i] = error }
                    }
                }
            }
        }
        group.wait()
        if let first = state.withLock({ $0.failures.min { $0.key < $1.key }?.value }) { throw first }
    }
}
