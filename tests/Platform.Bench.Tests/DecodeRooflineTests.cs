// The decode ceiling `bench engine` reports against: batch 1 is bound by its bytes,
// a shared-context batch reads the shared rows once but does every sequence's FLOPs,
// and the ceiling is the slower of the two at the rates given.
using Platform.Core.Models;

namespace Platform.Bench.Tests;

public class DecodeRooflineTests
{
    // The small bench preset's shape (RandomModelGenerator "small").
    private static readonly ModelConfig Small = new()
    {
        ModelType = "llama", HiddenSize = 512, IntermediateSize = 1408, NumLayers = 4, NumHeads = 8, NumKvHeads = 2, HeadDim = 64,
        VocabSize = 4096, MaxPositionEmbeddings = 32768,
    };

    private const long KvBytesPerToken = 2L * 4 * 2 * 64 * 4; // K and V, 4 layers, 2 KV heads of 64 floats

    [Fact]
    public void Batch_one_reads_every_weight_and_its_whole_context_and_is_bound_by_memory()
    {
        long parameters = 4 * (512L * (512 + 2 * 128) + 512L * 512 + 3L * 512 * 1408) + 4096L * 512;
        Assert.Equal(parameters, DecodeRoofline.WeightParameters(Small));
        Assert.Equal(32768, DecodeRoofline.KvTokensRead(32768, 1));
        long bytes = DecodeRoofline.StepBytes(Small, 32768, 1);
        Assert.Equal(4 * parameters + 32768 * KvBytesPerToken, bytes);
        double flops = DecodeRoofline.StepFlops(Small, 32768, 1);
        Assert.Equal(2.0 * parameters + 4.0 * 4 * 8 * 64 * 32768, flops);

        var (ceiling, limitedBy) = DecodeRoofline.Ceiling(1, bytes, flops, gbps: 50, gflops: 230);
        Assert.Equal("memory", limitedBy);
        Assert.Equal(50e9 / bytes, ceiling, 6);
    }

    [Fact]
    public void A_shared_context_batch_reads_the_shared_rows_once_but_does_every_sequences_flops()
    {
        long one = DecodeRoofline.StepBytes(Small, 32768, 1), eight = DecodeRoofline.StepBytes(Small, 32768, 8);
        Assert.Equal(7L * DecodeRoofline.DistinctTail * KvBytesPerToken, eight - one); // only the seven other tails
        double flops = DecodeRoofline.StepFlops(Small, 32768, 8);
        Assert.Equal(8 * DecodeRoofline.StepFlops(Small, 32768, 1), flops, 3);

        // At 50 GB/s and 230 GFLOP/s the eight sequences' attention FLOPs take longer than the bytes.
        var (ceiling, limitedBy) = DecodeRoofline.Ceiling(8, eight, flops, 50, 230);
        Assert.Equal("FMA", limitedBy);
        Assert.Equal(8 / (flops / 230e9), ceiling, 6);
        // It is above what reading eight separate contexts would allow: that was no ceiling for this shape.
        Assert.True(ceiling > 8 * 50e9 / (4.0 * DecodeRoofline.WeightParameters(Small) + 8 * 32768L * KvBytesPerToken));
    }

    [Fact]
    public void A_context_shorter_than_the_distinct_tail_is_read_once_per_sequence()
    {
        Assert.Equal(8 * 10, DecodeRoofline.KvTokensRead(10, 8));
        Assert.Equal(0, DecodeRoofline.KvTokensRead(0, 8));
    }
}
