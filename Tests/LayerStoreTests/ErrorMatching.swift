import Basics
import Testing

/// Expects `body` to throw a StoreError with `code` (tests never match an error's text).
@discardableResult
func expectError<R>(_ code: StoreError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                    _ body: () throws -> R) -> StoreError? {
    let error = #expect(throws: StoreError.self, sourceLocation: sourceLocation) { try body() }
    #expect(error?.code == code, "\(String(describing: error))", sourceLocation: sourceLocation)
    return error
}
