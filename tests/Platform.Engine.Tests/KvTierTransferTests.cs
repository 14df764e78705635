// Batched KV tier transfers (KvTierTransfer) in every dtype the pools hold: the
// staged path (one gather into a staging tensor, one device-host copy) must move
// the very bytes the direct memcpy path moves, out of the pools and back in, and
// an engine forced onto the staged path must load a bfloat16 prefix from host
// memory bit-identical to recomputing it. The pinned variant needs cuda: it is
// reported as skipped on a machine without one.
using Platform.Engine.KvCache;
using Platform.Engine.Scheduling;
using Platform.KvCache;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Platform.Engine.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class KvTransferCollection
{
    public const string Name = "KV tier transfers (KvTierTransfer.ForceStaged is process-wide)";
}

[Collection(KvTransferCollection.Name)]
public sealed class KvTierTransferTests(ITestOutputHelper output)
{
    private const int Layers = 3, Blocks = 12, BlockSize = 4, KvHeads = 2, HeadDim = 8;

    private static PagedKvStore FilledStore(ScalarType dtype, int seed)
    {
        var store = new PagedKvStore(Layers, Blocks, BlockSize, KvHeads, HeadDim, dtype);
        using var scope = torch.NewDisposeScope();
        using var generator = new Generator((ulong)seed);
        var slots = torch.arange(Blocks * BlockSize, torch.int64);
        for (int l = 0; l < Layers; l++)
        {
            var k = torch.randn([Blocks * BlockSize, KvHeads, HeadDim], generator: generator).to_type(dtype);
            var v = torch.randn([Blocks * BlockSize, KvHeads, HeadDim], generator: generator).to_type(dtype);
            store.Write(l, slots, k, v);
        }
        return store;
    }

    private static List<byte[]> Buffers(PagedKvStore store, int count) =>
        [.. Enumerable.Range(0, count).Select(_ => new byte[store.BytesPerBlock])];

    private void ReportPinned()
    {
        if (!torch.cuda.is_available()) output.WriteLine("skipped: StagedPinned (pinned host staging needs cuda; no cuda device here)");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    [InlineData(ScalarType.Float16)]
    public void The_staged_path_moves_the_same_bytes_as_the_direct_path(ScalarType dtype)
    {
        using var store = FilledStore(dtype, 11);
        var transfer = new KvTierTransfer(store);
        int[] blocks = [7, 0, 3, 11, 5];
        var direct = Buffers(store, blocks.Length);
        var staged = Buffers(store, blocks.Length);
        try
        {
            KvTierTransfer.ForceStaged = false;
            Assert.Equal(KvTransferPath.Direct, transfer.Path);
            transfer.CopyOut(blocks, direct);
            KvTierTransfer.ForceStaged = true;
            Assert.Equal(KvTransferPath.Staged, transfer.Path);
            transfer.CopyOut(blocks, staged);
        }
        finally
        {
            KvTierTransfer.ForceStaged = false;
        }
        for (int i = 0; i < blocks.Length; i++)
        {
            Assert.Equal(direct[i], staged[i]);
            // Not all zeros: the pools were filled, so the bytes say something.
            Assert.Contains(direct[i], b => b != 0);
        }
        // Distinct blocks hold distinct bytes (the order of the batch is kept).
        Assert.NotEqual(direct[0], direct[1]);
        output.WriteLine($"{dtype}: Direct and Staged copy-out agree on {blocks.Length} blocks of {store.BytesPerBlock} bytes");
        ReportPinned();
    }

    [Theory]
    [InlineData(ScalarType.Float32, false)]
    [InlineData(ScalarType.Float32, true)]
    [InlineData(ScalarType.BFloat16, false)]
    [InlineData(ScalarType.BFloat16, true)]
    [InlineData(ScalarType.Float16, false)]
    [InlineData(ScalarType.Float16, true)]
    public void Blocks_copied_in_come_out_again_unchanged_and_touch_no_other_block(ScalarType dtype, bool staged)
    {
        using var source = FilledStore(dtype, 21);
        using var target = FilledStore(dtype, 22);
        int[] from = [1, 9, 4];
        int[] to = [10, 2, 6];
        var moved = Buffers(source, from.Length);
        var untouchedBefore = Buffers(target, Blocks);
        var after = Buffers(target, Blocks);
        int[] all = [.. Enumerable.Range(0, Blocks)];
        var transfer = new KvTierTransfer(target);
        try
        {
            new KvTierTransfer(source).CopyOut(from, moved);
            transfer.CopyOut(all, untouchedBefore);
            KvTierTransfer.ForceStaged = staged;
            Assert.Equal(staged ? KvTransferPath.Staged : KvTransferPath.Direct, transfer.Path);
            transfer.CopyIn(to, moved);
            KvTierTransfer.ForceStaged = false;
            transfer.CopyOut(all, after);
        }
        finally
        {
            KvTierTransfer.ForceStaged = false;
        }
        for (int b = 0; b < Blocks; b++)
        {
            int at = Array.IndexOf(to, b);
            Assert.Equal(at >= 0 ? moved[at] : untouchedBefore[b], after[b]);
        }
        output.WriteLine($"{dtype}: copy-in on the {(staged ? "Staged" : "Direct")} path wrote {to.Length} blocks and nothing else");
        ReportPinned();
    }

    [Theory]
    [InlineData("bfloat16")]
    [InlineData("float16")]
    public async Task An_engine_on_the_staged_path_loads_a_prefix_from_host_memory_identical_to_recomputing_it(string dtype)
    {
        try
        {
            KvTierTransfer.ForceStaged = true;
            using var engine = TestModels.Engine(TestModels.TinyLlama, new EngineOptions { NumKvBlocks = 20, Threads = 2, DefaultSeed = 1, ComputeDtype = dtype });
            await engine.EnableKvTierAsync(new KvTierOptions { Mode = "host", HostMemory = "16MB" });
            Assert.Equal(KvTransferPath.Staged, engine.KvTiers!.Transfer.Path);
            var prompt = KvTierRuns.Prompt(200, 2);
            var cold = await KvTierRuns.Run(engine, prompt);
            await engine.KvTiers.FlushAsync();
            await KvTierRuns.Run(engine, KvTierRuns.Prompt(260, 3)); // evicts most of the prompt's blocks from the device
            var warm = await KvTierRuns.Run(engine, prompt);
            Assert.Equal(new CachedTokenSplit(48, 144, 0), warm.Last.CachedByTier);
            Assert.Equal(cold.Tokens, warm.Tokens);
            double worst = 0;
            for (int i = 0; i < cold.Logits.Count; i++)
                for (int j = 0; j < cold.Logits[i].Length; j++)
                    worst = Math.Max(worst, Math.Abs(cold.Logits[i][j] - warm.Logits[i][j]));
            output.WriteLine($"{dtype} staged host hit vs recomputation: worst logit difference {worst:E2} (tolerance 1e-5)");
            Assert.True(worst <= 1e-5, $"logits differ by {worst}");
        }
        finally
        {
            KvTierTransfer.ForceStaged = false;
        }
        ReportPinned();
    }
}
