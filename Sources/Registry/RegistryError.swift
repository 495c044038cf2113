import Basics
import OCI

/// Every failure the Registry target reports: one line naming what is wrong (which registry,
/// which repository, which blob), printable as is by the command line. `kind` lets a caller
/// (a retry, a test) tell the failures apart without reading the message.
public struct RegistryError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A reference, flag or file given by the user is malformed.
        case invalidInput
        /// The registry refused the credentials (a 401 after they were sent), or wanted some.
        case unauthorized
        /// 403: the credentials were accepted but do not allow the operation.
        case denied
        /// The tag, manifest or blob does not exist (404, MANIFEST_UNKNOWN, BLOB_UNKNOWN).
        case notFound
        /// No connection: refused, unresolvable, timed out, or cut before the response ended.
        case unreachable
        /// The TLS handshake or the certificate check failed.
        case tls
        /// Content whose digest or size is not what its descriptor or reference says.
        case digestMismatch
        /// The registry answered something the distribution spec does not allow here.
        case protocolViolation
        /// Writing what was received failed locally (the sink's own error).
        case local
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    /// A LayerStore failure (a malformed digest, a descriptor without a size, a file that cannot
    /// be written) met while talking to a registry.
    init(_ error: StoreError, kind: Kind = .protocolViolation) {
        self.init(kind, error.message)
    }

    /// This error with a prefix naming the operation it interrupted, kind kept.
    func context(_ prefix: String) -> RegistryError {
        RegistryError(kind, "\(prefix): \(message)")
    }
}
