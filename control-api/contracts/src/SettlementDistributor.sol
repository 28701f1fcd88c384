// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title Pays WeStream epoch settlements against anchored Merkle roots.
/// @notice Each epoch the operator anchors the root of a tree of cumulative
/// amounts: leaf = keccak256(bytes.concat(keccak256(abi.encode(account,
/// cumulative)))), the OpenZeppelin StandardMerkleTree leaf. Publishing pulls
/// the growth of the total from the incentive fund, so the contract always
/// holds what is anchored and not yet claimed. A claim proves a leaf of the
/// latest root and pays `cumulative - claimed[account]`; one claim collects
/// every epoch owed, and a claim with nothing owed reverts (NothingToClaim).
contract SettlementDistributor {
    using SafeERC20 for IERC20;

    IERC20 public immutable token;
    /// Holder of the incentive fund; it approves this contract to pull payouts.
    address public immutable fund;
    /// The only account that may publish roots.
    address public immutable operator;

    uint64 public lastEpoch;
    /// Root of the latest epoch: the only one claims are checked against.
    bytes32 public root;
    /// Sum of all cumulative amounts in the latest tree.
    uint256 public totalCumulative;
    uint256 public totalClaimed;
    mapping(uint64 epoch => bytes32) public rootOf;
    mapping(uint64 epoch => uint256) public totalOf;
    mapping(address account => uint256) public claimed;

    event Published(uint64 indexed epoch, bytes32 root, uint256 totalCumulative, uint256 pulled);
    event Claimed(address indexed account, uint256 cumulative, uint256 amount);

    error NotOperator(address caller);
    error EpochOutOfOrder(uint64 expected, uint64 given);
    error TotalDecreased(uint256 previous, uint256 given);
    error InvalidProof();
    error NothingToClaim(address account, uint256 cumulative, uint256 claimed);

    constructor(IERC20 token_, address fund_, address operator_) {
        token = token_;
        fund = fund_;
        operator = operator_;
    }

    function publish(uint64 epoch, bytes32 newRoot, uint256 newTotalCumulative) external {
        if (msg.sender != operator) revert NotOperator(msg.sender);
        if (epoch != lastEpoch + 1) revert EpochOutOfOrder(lastEpoch + 1, epoch);
        uint256 previous = totalCumulative;
        if (newTotalCumulative < previous) revert TotalDecreased(previous, newTotalCumulative);
        uint256 pulled = newTotalCumulative - previous;
        lastEpoch = epoch;
        root = newRoot;
        totalCumulative = newTotalCumulative;
        rootOf[epoch] = newRoot;
        totalOf[epoch] = newTotalCumulative;
        if (pulled > 0) token.safeTransferFrom(fund, address(this), pulled);
        emit Published(epoch, newRoot, newTotalCumulative, pulled);
    }

    function claim(address account, uint256 cumulative, bytes32[] calldata proof) external returns (uint256 amount) {
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, cumulative))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof();
        uint256 already = claimed[account];
        if (cumulative <= already) revert NothingToClaim(account, cumulative, already);
        amount = cumulative - already;
        claimed[account] = cumulative;
        totalClaimed += amount;
        token.safeTransfer(account, amount);
        emit Claimed(account, cumulative, amount);
    }
}
