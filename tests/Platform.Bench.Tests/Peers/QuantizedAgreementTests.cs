// The peer bench's int8 checks: each side's quantized greedy ids against its own f32 ids, as agreeing
// prefixes (QuantizedAgreement), and teacher-forced top ids counted position by position
// (ForcedAgreement); and whether the engine's int8 stays at least as close to its fp32 as llama.cpp's
// q8_0 to its f32.
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

    [Fact]
    public void Teacher_forced_agreement_counts_every_position_not_just_the_leading_ones()
    {
        // An early flip ends a prefix count but costs one position here.
        int[] engineF32 = [1, 2, 3, 4, 5, 6, 7, 8];
        int[] engineInt8 = [1, 9, 3, 4, 5, 6, 7, 8];
        int[] peerF32 = [4, 4, 4, 4, 4, 4, 4, 4];
        int[] peerQ8 = [4, 4, 4, 4, 4, 4, 0, 0];

        var forced = ForcedAgreement.Of(engineF32, engineInt8, peerF32, peerQ8);

        Assert.Equal(7, forced.Engine);
        Assert.Equal(6, forced.Peer);
        Assert.Equal(8, forced.Positions);
        Assert.True(forced.EngineAtLeastAsClose);
        Assert.DoesNotContain("FURTHER", forced.ToString(), StringComparison.Ordinal);

        var prefix = QuantizedAgreement.Of(engineF32, engineInt8, peerF32, peerQ8, tokens: 8);
        Assert.False(prefix.EngineAtLeastAsClose); // the same ids judged by their prefixes: 1 against 6
    }

    [Fact]
    public void Teacher_forced_agreement_flags_an_engine_further_from_its_f32()
    {
        int[] same = [1, 2, 3, 4];
        var forced = ForcedAgreement.Of(same, [1, 2, 0, 0], same, [1, 2, 3, 0]);

        Assert.Equal(2, forced.Engine);
        Assert.Equal(3, forced.Peer);
        Assert.False(forced.EngineAtLeastAsClose);
        Assert.Contains("ENGINE INT8 FURTHER FROM ITS F32", forced.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public void Teacher_forced_agreement_needs_every_side_to_score_the_same_positions()
    {
        int[] four = [1, 2, 3, 4];
        var error = Assert.Throws<ArgumentException>(() => ForcedAgreement.Of(four, four, four, [1, 2, 3]));
        Assert.Contains("same positions", error.Message, StringComparison.Ordinal);
    }
}
