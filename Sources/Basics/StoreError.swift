#if canImport(Glibc)
import Glibc
#endif

/// Every failure the project's libraries report: a code callers branch on, the path or blob it
/// concerns, the errno of a failed system call and the error it wraps, printed as one line that
/// names what is wrong (which blob, which path, which value), as the command line shows it.
///
/// The line is `context`, then `: strerror(errno)` when a system call failed, then `: cause`
/// for a wrapped error: "layer 2: entry \"etc/x\": open /a/b: No such file or directory".
/// Callers match on `code` (and `errno`, `subject`), never on the text: the text is for people
/// and keeps umoci's wording where the tests compare it with umoci's output.
/// (The shape follows swift-nio's FileSystemError and containerization's
/// ContainerizationError: a small code enum, a message, an optional cause.)
public struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure: a small set, for branching; the text says the rest.
    public enum Code: Sendable, Equatable, Hashable, CustomStringConvertible {
        /// A value given by the user or read from an image is not valid (a flag, a digest, a
        /// reference, a JSON field, a tar header).
        case invalidInput
        /// A blob, file, tag, or entry that should exist does not.
        case notFound
        /// Something that must not exist yet does (a tag, a bundle, a name).
        case alreadyExists
        /// Stored bytes are damaged: a digest or size mismatch, a corrupt or truncated stream,
        /// a malformed index or manifest file.
        case corrupt
        /// Valid but not handled here: a media type, a compression, an entry type, an option.
        case unsupported
        /// Held by someone else: a lock, a mount, a busy resource.
        case busy
        /// A system call failed for another reason (`errno` says which).
        case systemCall
        /// A limit was reached: too many links, too deep, too large.
        case limit
        /// Not (yet) classified: the message-only initializer, for callers not converted.
        case unclassified

        public var description: String {
            switch self {
            case .invalidInput: "invalid input"
            case .notFound: "not found"
            case .alreadyExists: "already exists"
            case .corrupt: "corrupt"
            case .unsupported: "unsupported"
            case .busy: "busy"
            case .systemCall: "system call failed"
            case .limit: "limit reached"
            case .unclassified: "unclassified"
            }
        }
    }

    public var code: Code
    /// What failed, worded for the user (without the errno text and the cause).
    public var context: String
    /// The path or blob the error concerns, when there is one.
    public var subject: String?
    /// The errno of the failed system call.
    public var errno: Int32?
    /// The error this one wraps (for example the entry error under "layer 2: …").
    public var cause: StoreError? {
        get { causeBox?.error }
        set { causeBox = newValue.map(Cause.init) }
    }
    private var causeBox: Cause?

    /// Boxed, so that an error can hold an error.
    private final class Cause: Sendable {
        let error: StoreError
        init(_ error: StoreError) { self.error = error }
    }

    public init(_ code: Code, _ context: String, subject: String? = nil, errno: Int32? = nil, cause: StoreError? = nil) {
        self.code = code
        self.context = context
        self.subject = subject
        self.errno = errno
        self.cause = cause
    }

    /// A message without a code (`.unclassified`), for callers outside the libraries not yet
    /// converted; the libraries state a code at every site.
    public init(_ message: String) { self.init(.unclassified, message) }

    /// `operation path: strerror(errno)`, for a failed system call. The code follows from the
    /// errno where one says more than "a system call failed" (ENOENT is notFound, EEXIST
    /// alreadyExists, EBUSY/EAGAIN busy, EOPNOTSUPP unsupported).
    public static func system(_ operation: String, _ path: String, errno code: Int32 = Glibc.errno) -> StoreError {
        StoreError(Code(errno: code), "\(operation) \(path)", subject: path, errno: code)
    }

    /// This error under `context`, with its code unless `code` is given: "context: self".
    public func wrapped(_ context: String, code: Code? = nil, subject: String? = nil) -> StoreError {
        StoreError(code ?? self.code, context, subject: subject ?? self.subject, cause: self)
    }

    /// The one line printed for this error.
    public var description: String {
        var line = context
        if let errno { line += ": " + String(cString: strerror(errno)) }
        if let cause { line += ": " + cause.description }
        return line
    }

    /// The one line (the same as `description`), for callers that print it.
    public var message: String { description }

    /// The innermost cause (self when nothing is wrapped).
    public var root: StoreError { cause?.root ?? self }

    public static func == (a: StoreError, b: StoreError) -> Bool {
        a.code == b.code && a.context == b.context && a.subject == b.subject && a.errno == b.errno && a.cause == b.cause
    }
}

extension StoreError.Code {
    /// The code for a failed system call's errno.
    public init(errno code: Int32) {
        switch code {
        case ENOENT: self = .notFound
        case EEXIST, ENOTEMPTY: self = .alreadyExists
        case EBUSY, EAGAIN: self = .busy
        case EOPNOTSUPP, ENOSYS: self = .unsupported
        case ELOOP, ENAMETOOLONG, EMLINK: self = .limit
        default: self = .systemCall
        }
    }
}
