import StrataTestSupport
import Testing

@testable import StrataJournal

@Suite struct MemoryWatermarkTests {
    /// Above its memory high watermark the journal reports itself degraded and says why (the
    /// AMQP gateway holds publishers then); 0 turns the watermark off; the default is 40% of RAM.
    @Test func aWatermarkBelowTheResidentSetDegradesHealth() async throws {
        try await withTemporaryDirectory { directory in
            let resident = try #require(Journal.residentBytes())
            #expect(resident > 0)
            var configuration = testConfiguration(directory + "/low")
            configuration.minFreeDiskBytes = 0
            configuration.memoryHighWatermarkBytes = 1
            let low = try Journal(configuration: configuration, logger: quietLogger)
            #expect(low.health.status == .degraded)
            #expect(low.health.problems.count == 1 && low.health.problems[0].hasPrefix("memory high watermark reached"))
            low.close()
            configuration = testConfiguration(directory + "/off")
            configuration.minFreeDiskBytes = 0
            configuration.memoryHighWatermarkBytes = 0
            let off = try Journal(configuration: configuration, logger: quietLogger)
            #expect(off.health.status == .ok && off.memoryHighWatermark == 0)
            off.close()
            configuration.memoryHighWatermarkBytes = nil
            let standard = try Journal(configuration: configuration, logger: quietLogger)
            #expect(standard.memoryHighWatermark > resident && standard.health.status == .ok)
            standard.close()
        }
    }
}
