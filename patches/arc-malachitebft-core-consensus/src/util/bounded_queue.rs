use std::collections::BTreeMap;
use std::fmt::Display;

use tracing::{debug, trace};

/// A data structure that maintains a queue of values associated with monotonically increasing indices.
///
/// # Type Parameters
/// - `I`: The type of the index associated with each value in the queue.
/// - `T`: The type of values stored in the queue.
#[derive(Clone, Debug)]
pub struct BoundedQueue<I, T> {
    capacity: usize,
    per_key_capacity: usize,
    queue: BTreeMap<I, Vec<T>>,
}

impl<I, T> BoundedQueue<I, T>
where
    I: Ord,
{
    /// Creates a new `BoundedQueue` with the specified capacity (max distinct keys)
    /// and per-key capacity (max values per key).
    pub fn new(capacity: usize, per_key_capacity: usize) -> Self {
        Self {
            capacity,
            per_key_capacity,
            queue: BTreeMap::new(),
        }
    }

    /// Push a value into the queue associated with the given index.
    ///
    /// Returns `true` if the value was successfully added,
    /// or `false` if the queue is full and the value could not be added.
    pub fn push(&mut self, index: I, value: T) -> bool
    where
        I: Clone + Display + Ord,
    {
        // If the index already exists, append the value to the existing vector,
        // but only if the per-key capacity has not been reached.
        if let Some(values) = self.queue.get_mut(&index) {
            if values.len() >= self.per_key_capacity {
                debug!(
                    index = %index,
                    per_key_capacity = self.per_key_capacity,
                    "Per-key capacity reached, rejecting value"
                );
                return false;
            }
            values.push(value);
            return true;
        }

        // If the index does not exist, check if we can add a new entry.
        if !self.is_full() {
            self.queue.insert(index, vec![value]);
            return true;
        }

        let queue_length = self.queue.len();

        // If the queue is full, evict the highest index and insert the new value.
        if let Some(max_entry) = self.queue.last_entry() {
            let max_index = max_entry.key();

            // If the new index is less than the maximum index, we can evict the maximum index.
            if &index < max_index {
                debug!(
                    index = %index,
                    evicted_index = %max_index,
                    capacity = self.capacity,
                    len = queue_length,
                    "Bounded queue is full, evicting highest index"
                );

                // Remove the entry at the highest index
                max_entry.remove();

                // Insert the new index with its value
                self.queue.insert(index, vec![value]);

                return true;
            }
        }

        debug!(
            index = %index,
            capacity = self.capacity,
            len = self.queue.len(),
            "Bounded queue is full, rejecting value"
        );

        false
    }

    /// Combination of `shift` and `take` methods.
    pub fn shift_and_take(&mut self, min_index: &I) -> impl Iterator<Item = T>
    where
        I: Display,
    {
        self.shift(min_index);
        self.take(min_index)
    }

    /// Remove all entries with indices less than `min_index`.
    pub fn shift(&mut self, min_index: &I)
    where
        I: Display,
    {
        let before = self.queue.len();

        // split_off returns a new BTreeMap with all entries >= min_index in O(log n),
        // which is more efficient than retain's O(n) scan.
        self.queue = self.queue.split_off(min_index);

        let removed = before - self.queue.len();
        if removed > 0 {
            trace!(
                min_index = %min_index,
                removed,
                remaining = self.queue.len(),
                "Shifted bounded queue"
            );
        }
    }

    /// Take all entries with indices equal to `index` and return them.
    pub fn take(&mut self, index: &I) -> impl Iterator<Item = T> {
        self.queue
            .remove(index)
            .into_iter()
            .flat_map(|values| values.into_iter())
    }

    /// Retain only the values for which the predicate returns `true`.
    ///
    /// Values are tested per-entry: for each index, the predicate receives
    /// the index and each value. If all values for a given index are removed,
    /// the index entry itself is removed as well.
    ///
    /// Returns the number of values removed.
    pub fn retain<F>(&mut self, mut f: F) -> usize
    where
        F: FnMut(&I, &T) -> bool,
    {
        let mut removed = 0;
        self.queue.retain(|index, values| {
            let before = values.len();
            values.retain(|value| f(index, value));
            removed += before - values.len();
            !values.is_empty()
        });
        removed
    }

    /// Remove all entries from the queue.
    pub fn clear(&mut self) {
        self.queue.clear();
    }

    /// Whether the queue is full
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.capacity
    }

    /// Returns true if the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Returns the current number of unique indices in the queue.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Returns the total number of values stored in the queue across all indices.
    pub fn size(&self) -> usize {
        self.queue.values().map(|v| v.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_within_capacity() {
        let mut queue = BoundedQueue::new(3, 1000);

        assert!(queue.push(1, "value1"));
        assert!(queue.push(2, "value2"));
        assert!(queue.push(3, "value3"));

        assert_eq!(queue.queue.len(), 3);
        assert_eq!(queue.queue.get(&1).unwrap(), &vec!["value1"]);
        assert_eq!(queue.queue.get(&2).unwrap(), &vec!["value2"]);
        assert_eq!(queue.queue.get(&3).unwrap(), &vec!["value3"]);
    }

    #[test]
    fn push_to_existing_index() {
        let mut queue = BoundedQueue::new(2, 1000);
        queue.push(10, "a");

        // Push another value to the same index
        let result = queue.push(10, "b");

        assert!(result);
        // The number of unique indices should not change
        assert_eq!(queue.queue.len(), 1);
        // The vector at the index should now contain both values
        assert_eq!(queue.queue.get(&10), Some(&vec!["a", "b"]));
    }

    #[test]
    fn per_key_growth_is_bounded() {
        let per_key_cap = 5;
        let mut queue = BoundedQueue::new(3, per_key_cap);

        // Push values up to the per-key capacity
        for i in 0..per_key_cap {
            assert!(queue.push(10, i), "push #{i} should succeed");
        }
        assert_eq!(queue.size(), per_key_cap);

        // The next push to the same key should be rejected
        assert!(
            !queue.push(10, 999),
            "push beyond per-key capacity should fail"
        );
        assert_eq!(
            queue.size(),
            per_key_cap,
            "size must not grow beyond per-key capacity"
        );
    }

    #[test]
    fn per_key_limit_independent_per_key() {
        let mut queue = BoundedQueue::new(5, 2);

        // Fill key 10 to per-key capacity
        assert!(queue.push(10, "a"));
        assert!(queue.push(10, "b"));
        assert!(!queue.push(10, "c"), "key 10 is full");

        // Key 20 should still accept values independently
        assert!(queue.push(20, "x"));
        assert!(queue.push(20, "y"));
        assert!(!queue.push(20, "z"), "key 20 is full");

        assert_eq!(queue.size(), 4);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn per_key_limit_with_queue_full() {
        // 2 keys max, 3 values per key
        let mut queue = BoundedQueue::new(2, 3);

        queue.push(10, "a");
        queue.push(10, "b");
        queue.push(20, "c");

        // Queue is full (2 keys). New key rejected.
        assert!(!queue.push(30, "d"));

        // But existing keys can still accept values up to per-key limit.
        assert!(queue.push(10, "e")); // 3rd value for key 10
        assert!(!queue.push(10, "f")); // 4th value — rejected by per-key limit

        assert_eq!(queue.size(), 4); // a, b, e for key 10 + c for key 20
    }

    #[test]
    fn push_to_full_queue_fails_for_new_index() {
        let mut queue = BoundedQueue::new(2, 1000);
        queue.push(10, "a");
        queue.push(20, "b");

        // Assert queue is full
        assert_eq!(queue.queue.len(), queue.capacity);

        // Try to push a new index to a full queue
        let result = queue.push(30, "c");

        assert!(!result, "Push should fail when capacity is reached");
        assert_eq!(queue.queue.len(), 2, "Queue length should not change");
        assert!(
            !queue.queue.contains_key(&30),
            "The new element should not be added"
        );
    }

    #[test]
    fn push_to_full_queue_succeeds_for_existing_index() {
        let mut queue = BoundedQueue::new(2, 1000);
        queue.push(10, "a");
        queue.push(20, "b");

        // Assert queue is full
        assert_eq!(queue.queue.len(), queue.capacity);

        // Push to an existing index on a full queue
        let result = queue.push(10, "c");

        assert!(result, "Push should succeed for an existing index");
        assert_eq!(
            queue.queue.len(),
            2,
            "Queue length (number of indices) should not change"
        );
        assert_eq!(
            queue.queue.get(&10),
            Some(&vec!["a", "c"]),
            "The new value should be appended"
        );
    }

    #[test]
    fn push_to_zero_capacity_queue() {
        let mut queue = BoundedQueue::new(0, 1000);
        let result = queue.push(1, "a");

        assert!(!result);
        assert!(queue.queue.is_empty());
    }

    #[test]
    fn take_existing_index() {
        let mut queue = BoundedQueue::new(3, 1000);
        queue.push(10, "a");
        queue.push(10, "b");
        queue.push(20, "c");

        // Take the values for index 10
        let taken_values: Vec<&str> = queue.take(&10).collect();

        assert_eq!(taken_values, vec!["a", "b"]);
        assert_eq!(
            queue.queue.len(),
            1,
            "The entry for index 10 should be removed"
        );
        assert!(
            !queue.queue.contains_key(&10),
            "The key 10 should no longer exist"
        );
        assert!(
            queue.queue.contains_key(&20),
            "The key 20 should still exist"
        );
    }

    #[test]
    fn take_non_existent_index() {
        let mut queue = BoundedQueue::new(3, 1000);
        queue.push(10, "a");

        // Take a non-existent index
        let taken_values: Vec<&str> = queue.take(&99).collect();

        assert!(taken_values.is_empty());
        assert_eq!(queue.queue.len(), 1, "Queue should be unchanged");
    }

    #[test]
    fn take_empty_queue() {
        let mut queue: BoundedQueue<i32, String> = BoundedQueue::new(5, 1000);
        let values: Vec<_> = queue.take(&1).collect();
        assert!(values.is_empty());
    }

    #[test]
    fn shift_removes_older_entries() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(10, 1);
        queue.push(20, 2);
        queue.push(30, 3);
        queue.push(40, 4);

        // Shift to remove all indices less than 30
        queue.shift(&30);

        assert_eq!(queue.queue.len(), 2);
        assert!(!queue.queue.contains_key(&10));
        assert!(!queue.queue.contains_key(&20));
        assert!(queue.queue.contains_key(&30)); // Should not be removed
        assert!(queue.queue.contains_key(&40));
    }

    #[test]
    fn shift_all_and_none() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(10, 1);
        queue.push(20, 2);

        // Act: Shift with an index greater than all keys
        queue.shift(&30);
        // Assert: All entries should be removed
        assert!(queue.queue.is_empty());

        // Arrange again
        queue.push(10, 1);
        queue.push(20, 2);

        // Act: Shift with an index smaller than all keys
        queue.shift(&5);
        // Assert: No entries should be removed
        assert_eq!(queue.queue.len(), 2);
        assert!(queue.queue.contains_key(&10));
        assert!(queue.queue.contains_key(&20));
    }

    #[test]
    fn shift_on_empty_queue() {
        let mut queue = BoundedQueue::<u32, i32>::new(5, 1000);
        // Shift on an empty queue should not panic
        queue.shift(&100);
        assert!(queue.queue.is_empty());
    }

    #[test]
    fn shift_and_take_removes_older_and_takes_target() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(1, "value1");
        queue.push(2, "value2a");
        queue.push(2, "value2b");
        queue.push(3, "value3");
        queue.push(4, "value4");

        // Shift removes keys < 2 (i.e., key 1), then takes values from key 2
        let values: Vec<_> = queue.shift_and_take(&2).collect();

        assert_eq!(values, vec!["value2a", "value2b"]);
        assert!(!queue.queue.contains_key(&1), "Key 1 should be shifted");
        assert!(!queue.queue.contains_key(&2), "Key 2 should be taken");
        assert!(queue.queue.contains_key(&3));
        assert!(queue.queue.contains_key(&4));
        assert_eq!(queue.queue.len(), 2);
    }

    #[test]
    fn shift_and_take_with_non_existent_target() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(1, "value1");
        queue.push(3, "value3");
        queue.push(5, "value5");

        // Shift removes keys < 4 (i.e., 1 and 3), then takes from non-existent key 4
        let values: Vec<_> = queue.shift_and_take(&4).collect();

        assert!(
            values.is_empty(),
            "Should return empty for non-existent key"
        );
        assert!(!queue.queue.contains_key(&1), "Key 1 should be shifted");
        assert!(!queue.queue.contains_key(&3), "Key 3 should be shifted");
        assert!(queue.queue.contains_key(&5), "Key 5 should remain");
        assert_eq!(queue.queue.len(), 1);
    }

    #[test]
    fn clone_trait() {
        let mut queue = BoundedQueue::new(3, 1000);
        queue.push(1, "value1");
        queue.push(2, "value2");

        let cloned_queue = queue.clone();

        assert_eq!(queue.capacity, cloned_queue.capacity);
        assert_eq!(queue.queue, cloned_queue.queue);
        // Ensure it's a deep clone by modifying one and checking the other
        queue.push(1, "another_value");
        assert_ne!(queue.queue, cloned_queue.queue);
    }

    #[test]
    fn debug_trait() {
        let mut queue = BoundedQueue::new(2, 1000);
        queue.push(1, "value1");

        let debug_str = format!("{queue:?}");
        assert!(debug_str.contains("BoundedQueue"));
        assert!(debug_str.contains("capacity: 2"));
        assert!(debug_str.contains("queue: {1: [\"value1\"]}"));
    }

    #[test]
    fn with_different_types() {
        // Test with different index and value types to ensure generics work
        let mut queue: BoundedQueue<String, i32> = BoundedQueue::new(3, 1000);

        assert!(queue.push("key1".to_string(), 100));
        assert!(queue.push("key2".to_string(), 200));
        assert!(queue.push("key1".to_string(), 150));

        let values: Vec<_> = queue.take(&"key1".to_string()).collect();
        assert_eq!(values, vec![100, 150]);
    }

    #[test]
    fn ordering_with_btreemap() {
        let mut queue = BoundedQueue::new(5, 1000);

        // Insert in non-sequential order
        queue.push(3, "value3");
        queue.push(1, "value1");
        queue.push(4, "value4");
        queue.push(2, "value2");

        // BTreeMap should maintain key order
        let keys: Vec<_> = queue.queue.keys().cloned().collect();
        assert_eq!(keys, vec![1, 2, 3, 4]);
    }

    #[test]
    fn edge_case_single_capacity() {
        let mut queue = BoundedQueue::new(1, 1000);

        assert!(queue.push(1, "value1"));

        assert!(
            queue.push(1, "value1_again"),
            "Should succeed on existing index"
        );

        assert!(
            !queue.push(2, "value2"),
            "Should fail on new index when full"
        );

        let values: Vec<_> = queue.take(&1).collect();
        assert_eq!(values, vec!["value1", "value1_again"]);
        assert!(queue.queue.is_empty());
    }

    #[test]
    fn multiple_operations_sequence() {
        let mut queue = BoundedQueue::new(4, 1000);

        // Initial setup
        queue.push(1, "a");
        queue.push(2, "b");
        queue.push(3, "c");
        queue.push(4, "d");
        assert_eq!(queue.queue.len(), 4);

        // Shift and verify
        queue.shift(&3); // Removes keys < 3 (i.e., 1 and 2)
        assert_eq!(queue.queue.len(), 2);
        assert!(!queue.queue.contains_key(&2));
        assert!(queue.queue.contains_key(&3));

        // Take and verify
        let values: Vec<_> = queue.take(&3).collect();
        assert_eq!(values, vec!["c"]);
        assert_eq!(queue.queue.len(), 1);
        assert!(!queue.queue.contains_key(&3));

        // Add more values, filling capacity
        assert!(queue.push(5, "e"));
        assert!(queue.push(6, "f"));
        assert!(queue.push(7, "g"));
        assert_eq!(queue.queue.len(), 4);

        // This should fail - at capacity and 8 is greater than 7
        assert!(!queue.push(8, "h"));

        // Final verification
        let keys: Vec<_> = queue.queue.keys().cloned().collect();
        assert_eq!(keys, vec![4, 5, 6, 7]);
    }

    #[test]
    fn push_out_of_order_to_full_queue() {
        let mut queue = BoundedQueue::new(2, 1000);
        queue.push(10, "a");
        queue.push(30, "b");

        // Assert queue is full
        assert_eq!(queue.queue.len(), queue.capacity);

        // Try to push a new index to a full queue
        let result = queue.push(20, "c");

        assert!(result, "Push should succeed");
        assert_eq!(queue.queue.len(), 2, "Queue length should not change");

        assert!(
            queue.queue.contains_key(&20),
            "The new element should be added"
        );

        assert!(
            !queue.queue.contains_key(&30),
            "The high value element should be removed"
        );
    }

    #[test]
    fn retain_removes_matching_values() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(10, "a");
        queue.push(10, "b");
        queue.push(20, "c");
        queue.push(30, "d");

        // Remove all values that are "a" or "c"
        let removed = queue.retain(|_, v| *v != "a" && *v != "c");

        assert_eq!(removed, 2);
        // Index 10 should still exist with only "b"
        assert_eq!(queue.queue.get(&10), Some(&vec!["b"]));
        // Index 20 should be removed entirely since its only value was "c"
        assert!(!queue.queue.contains_key(&20));
        // Index 30 should remain unchanged
        assert_eq!(queue.queue.get(&30), Some(&vec!["d"]));
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn retain_removes_all_values() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(10, "a");
        queue.push(20, "b");

        let removed = queue.retain(|_, _| false);

        assert_eq!(removed, 2);
        assert!(queue.is_empty());
    }

    #[test]
    fn retain_keeps_all_values() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(10, "a");
        queue.push(20, "b");

        let removed = queue.retain(|_, _| true);

        assert_eq!(removed, 0);
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.size(), 2);
    }

    #[test]
    fn retain_uses_index() {
        let mut queue = BoundedQueue::new(5, 1000);
        queue.push(10, "a");
        queue.push(10, "b");
        queue.push(20, "c");
        queue.push(30, "d");

        // Remove all values at index 10
        let removed = queue.retain(|index, _| *index != 10);

        assert_eq!(removed, 2);
        assert!(!queue.queue.contains_key(&10));
        assert!(queue.queue.contains_key(&20));
        assert!(queue.queue.contains_key(&30));
        assert_eq!(queue.len(), 2);
    }
}
