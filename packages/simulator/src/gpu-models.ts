/** GPUs that rented fleets actually hold, with the numbers nvidia-smi reports for them. */
export interface GpuModel {
  name: string;
  memoryTotalMb: number;
  /** Board power limit, W. */
  maxPowerWatts: number;
  idlePowerWatts: number;
}

export const GPU_MODELS: readonly GpuModel[] = [
  { name: 'NVIDIA H100 80GB HBM3', memoryTotalMb: 81_559, maxPowerWatts: 700, idlePowerWatts: 70 },
  { name: 'NVIDIA A100-SXM4-80GB', memoryTotalMb: 81_920, maxPowerWatts: 400, idlePowerWatts: 55 },
  { name: 'NVIDIA A100-PCIE-40GB', memoryTotalMb: 40_960, maxPowerWatts: 250, idlePowerWatts: 35 },
  { name: 'NVIDIA L40S', memoryTotalMb: 46_068, maxPowerWatts: 350, idlePowerWatts: 35 },
  { name: 'NVIDIA GeForce RTX 4090', memoryTotalMb: 24_564, maxPowerWatts: 450, idlePowerWatts: 20 },
  { name: 'NVIDIA GeForce RTX 3090', memoryTotalMb: 24_576, maxPowerWatts: 350, idlePowerWatts: 25 },
  { name: 'NVIDIA A10G', memoryTotalMb: 23_028, maxPowerWatts: 300, idlePowerWatts: 25 },
];

/** Hosts come mostly in 1, 2, 4 and 8 GPUs; odd counts happen (a GPU fell off the bus). */
export const GPU_COUNT_WEIGHTS: ReadonlyArray<readonly [number, number]> = [
  [1, 30],
  [2, 20],
  [3, 3],
  [4, 20],
  [5, 1],
  [6, 3],
  [7, 1],
  [8, 22],
];
