import CCurl
import Foundation
import NIOPosix
import Synchronization

/// An HTTP request for an object store.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(method: String, url: String, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    /// Header names lowercased.
    public var headers: [String: String]
    public var body: [UInt8]
}

/// Blocking libcurl transfers run on a thread pool of their own, never on an event loop.
/// Easy handles are pooled and reset between transfers, so their connections are reused.
public final class CurlTransfer: Sendable {
    private let pool: NIOThreadPool
    /// An easy handle; used by one transfer at a time.
    private struct Handle: @unchecked Sendable {
        let pointer: UnsafeMutableRawPointer
    }

    private let handles = Mutex<[Handle]>([])
    private let timeoutSeconds: Int

    /// `timeoutSeconds`: a transfer that moves no byte for this long fails (a large body on a
    /// slow link may take longer in all).
    public init(threads: Int = 4, timeoutSeconds: Int = 60) {
        _ = Self.initializeOnce
        pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        self.timeoutSeconds = timeoutSeconds
    }

    private static let initializeOnce: Void = { _ = curl_global_init(3) }()  // CURL_GLOBAL_ALL

    public func shutdown() async {
        try? await pool.shutdownGracefully()
        for handle in handles.withLock({ handles in
            defer { handles = [] }
            return handles
        }) {
            curl_easy_cleanup(handle.pointer)
        }
    }

    /// Performs `request`; throws `ObjectStoreError.transport` when no HTTP answer came.
    public func perform(_ request: HTTPRequest) async throws -> HTTPResponse {
        try await pool.runIfActive { try self.performBlocking(request) }
    }

    private func performBlocking(_ request: HTTPRequest) throws -> HTTPResponse {
        let pooled = handles.withLock { $0.popLast() } ?? Handle(pointer: curl_easy_init()!)
        let handle = pooled.pointer
        defer {
            curl_easy_reset(handle)
            handles.withLock { $0.append(pooled) }
        }
        let sink = ResponseSink()
        let context = Unmanaged.passUnretained(sink).toOpaque()
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for (name, value) in request.headers { headerList = curl_slist_append(headerList, "\(name): \(value)") }
        // libcurl would add these itself; S3 signs what is sent, so nothing unsigned is added.
        headerList = curl_slist_append(headerList, "Expect:")
        if request.headers.first(where: { $0.0.lowercased() == "content-type" }) == nil {
            headerList = curl_slist_append(headerList, "Content-Type:")
        }
        let code: CURLcode = request.body.withUnsafeBytes { body in
            request.url.withCString { url in
                request.method.withCString { method in
                    _ = strata_curl_setopt_pointer(handle, CURLOPT_URL, url)
                    _ = strata_curl_setopt_pointer(handle, CURLOPT_CUSTOMREQUEST, method)
                    _ = strata_curl_setopt_pointer(handle, CURLOPT_HTTPHEADER, headerList)
                    _ = strata_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
                    _ = strata_curl_setopt_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1)
                    _ = strata_curl_setopt_long(handle, CURLOPT_LOW_SPEED_TIME, timeoutSeconds)
                    _ = strata_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT, 10)
                    if !body.isEmpty || request.method == "PUT" || request.method == "POST" {
                        _ = strata_curl_setopt_pointer(
                            handle, CURLOPT_POSTFIELDS, body.baseAddress ?? UnsafeRawPointer(bitPattern: 1))
                        _ = strata_curl_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
                    }
                    _ = strata_curl_setopt_callback(handle, CURLOPT_WRITEFUNCTION) { data, size, count, context in
                        let sink = Unmanaged<ResponseSink>.fromOpaque(context!).takeUnretainedValue()
                        sink.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: size * count))
                        return size * count
                    }
                    _ = strata_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context)
                    _ = strata_curl_setopt_callback(handle, CURLOPT_HEADERFUNCTION) { data, size, count, context in
                        let sink = Unmanaged<ResponseSink>.fromOpaque(context!).takeUnretainedValue()
                        let line = String(
                            decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
                        if let colon = line.firstIndex(of: ":") {
                            let name = line[..<colon].lowercased()
                            let value = line[line.index(after: colon)...].trimmingCharacters(
                                in: .whitespacesAndNewlines)
                            sink.headers[name] = value
                            // The body arrives in pieces: room for all of it at once.
                            if name == "content-length", let length = Int(value), length <= 1 << 30 {
                                sink.body.reserveCapacity(length)
                            }
                        }
                        return size * count
                    }
                    _ = strata_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context)
                    return curl_easy_perform(handle)
                }
            }
        }
        guard code == CURLE_OK else {
            throw ObjectStoreError.transport(
                "\(request.method) \(request.url): \(String(cString: curl_easy_strerror(code)))")
        }
        return HTTPResponse(status: strata_curl_response_code(handle), headers: sink.headers, body: sink.body)
    }

    /// Collects one transfer's answer (used on one pool thread at a time).
    private final class ResponseSink {
        var body: [UInt8] = []
        var headers: [String: String] = [:]
    }
}

/// What an object store operation can fail with.
public enum ObjectStoreError: Error, CustomStringConvertible, Sendable, Equatable {
    /// No HTTP answer (connection refused, timeout, DNS): worth retrying later.
    case transport(String)
    /// The store answered with an error: status, its error code and message.
    case service(status: Int, code: String, message: String)
    case notFound(String)
    /// The object's bytes failed their checksum.
    case corrupt(String)

    public var description: String {
        switch self {
        case .transport(let detail): "object store unreachable: \(detail)"
        case .service(let status, let code, let message): "object store error \(status) \(code): \(message)"
        case .notFound(let key): "no object \(key)"
        case .corrupt(let detail): "corrupt object: \(detail)"
        }
    }
}
