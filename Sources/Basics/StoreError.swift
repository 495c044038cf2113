#if canImport(Glibc)
import Glibc
#endif

/// Every failure LayerStore reports: one line that names what is wrong (which blob, which path,
/// which value), printable as is by the command line.
public struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    /// `operation path: strerror(errno)`, for a failed system call.
    public static func system(_ operation: String, _ path: String, errno code: Int32 = errno) -> StoreError {
        StoreError("\(operation) \(path): \(String(cString: strerror(code)))")
    }
}
