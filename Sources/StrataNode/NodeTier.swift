import Foundation
import Logging
import StrataJournal
import StrataObjects

extension TierSettings {
    /// The object store these settings name (nil when the tier is off).
    public func makeStore(environment: [String: String] = ProcessInfo.processInfo.environment) throws(JournalError)
        -> (any ObjectStore)?
    {
        if let webHDFS {
            return WebHDFSObjectStore(endpoint: webHDFS, root: webHDFSRoot, user: webHDFSUser, transfer: CurlTransfer())
        }
        guard let bucket else { return nil }
        var configuration: S3Configuration
        do {
            var environment = environment
            if let accessKey { environment["AWS_ACCESS_KEY_ID"] = accessKey }
            if let secretKey { environment["AWS_SECRET_ACCESS_KEY"] = secretKey }
            configuration = try S3Configuration.fromEnvironment(
                bucket: bucket, endpoint: endpoint, region: region, prefix: prefix, environment: environment)
        } catch {
            throw JournalError(.invalidArgument, "object tier: \(error)")
        }
        configuration.pathStyle = pathStyle
        return S3ObjectStore(configuration: configuration, transfer: CurlTransfer())
    }

    /// The offloader's settings.
    public var offloaderConfiguration: TierOffloader.Configuration {
        var configuration = TierOffloader.Configuration()
        configuration.defaultLocalRetentionMilliseconds = localRetentionMilliseconds
        configuration.maxObjectBytes = maxObjectBytes
        configuration.interval = .milliseconds(intervalMilliseconds)
        configuration.maxBackoff = .milliseconds(maxBackoffMilliseconds)
        configuration.destination = destination ?? ""
        return configuration
    }
}
