// The peer bench's int8 check (QuantizedAgreement): each side's quantized greedy ids against its own f32
// ids, as agreeing prefixes, and whether the engine's int8 follows its fp32 at least as far as
// llama.cpp's q8_0 follows its f32.
using Platform.Bench.Peers;

namespace Platform.Bench.Tests.Peers;

public sealed class QuantizedAgreementTests
{
    [Fact]
    public void Counts_each_side_s_prefix_against_its_own_f32_ids()
    {
        int[] engineF32 = [1, 2, 3, 4, 5, 6];
        int[] engineInt8 = [1, 2, 3, 4, 9, 6];
        int[] peerF32 = [7, 8, 9, 10, 11, 12];
        int[] peerQ8 = [7, 8, 0, 10, 11, 12];

        var agreement = QuantizedAgreement.Of(engineF32, engineInt8, peerF32, peerQ8, tokens: 6);

        Assert.Equal(4, agreement.EngineIds);
        Assert.Equal(2, agreement.PeerIds);
        Assert.True(agreement.EngineAtLeastAsClose);
        Assert.DoesNotContain("DRIFTS", agreement.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void An_engine_that_drifts_sooner_than_llama_cpp_is_flagged()
    {
        int[] same = [1, 2, 3, 4];
        var agreement = QuantizedAgreement.Of(same, [1, 5, 3, 4], same, same, tokens: 4);

        Assert.Equal(1, agreement.EngineIds);
        Assert.Equal(4, agreement.PeerIds);
        Assert.False(agreement.EngineAtLeastAsClose);
        Assert.Contains("ENGINE INT8 DRIFTS SOONER", agreement.ToString(), StringComparison.Ordinal);
    }
}
